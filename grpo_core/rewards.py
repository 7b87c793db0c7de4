"""Reward functions for GRPO, registered by name, and their weighted combination.

A reward function maps `(item, completion_text) -> float`, where `item` is a prompt
record with at least "question" and "answer" (GSM8K answer text ending in "#### N").
`compute_rewards` runs the configured functions over a batch on the host CPU, keeps
every function's rewards for metrics, and turns a function that raises into a logged 0:
one odd completion must never crash a training step.

math_verify guards parsing with `signal.alarm`, which only works in the main thread.
The reward phase may run in a Prefect worker thread, so every call here disables that
timeout (`parsing_timeout=None`, `timeout_seconds=None`); the inputs are short final
answers extracted by our own regexes, not whole completions, so they parse quickly.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from math_verify import parse, verify

from grpo_core.errors import UserError
from grpo_core.registry import make_registry

logger = logging.getLogger(__name__)

RewardFn = Callable[[Mapping, str], float]
REWARD_FUNCTIONS, register_reward = make_registry("reward function")

# gsm8k_correct 1.0, think_answer_format 0.5, tag_count 0.5.
DEFAULT_REWARD_SPECS: tuple[tuple[str, float], ...] = (
    ("gsm8k_correct", 1.0),
    ("think_answer_format", 0.5),
    ("tag_count", 0.5),
)


# ---- final-answer extraction -------------------------------------------------------

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# A LaTeX fraction, or a number with optional thousands commas, decimals and "/denominator".
# A minus sign counts only when it does not follow a word or ")" ("10-12" is not -12).
_NUMBER = re.compile(
    r"(?:(?<![\w)])-)?(?:\\[dt]?frac\{[^{}]+\}\{[^{}]+\}"
    r"|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?)"
)
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d)")


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in `text`, braces balanced; None if absent."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def _normalise(text: str) -> str:
    """Unicode minus to '-', drop currency signs, \\text{units}, spaces and '\\!'."""
    text = text.replace("\u2212", "-").replace("\\$", "").replace("$", "")
    text = re.sub(r"\\text\{[^{}]*\}", " ", text).replace("\\!", "")
    return text.strip()


def extract_final_answer(completion: str) -> str | None:
    """The completion's final answer as a short math string, or None.

    Looks inside the last <answer>...</answer> when present (else the whole text),
    prefers the last \\boxed{...} there, and takes the last number or fraction of that;
    thousands commas, `$` and unit words are dropped ("$1,250 dollars" -> "1250").
    """
    tags = _ANSWER_TAG.findall(completion)
    span = tags[-1] if tags else completion
    boxed = _last_boxed(span)
    span = _normalise(boxed if boxed is not None else span)
    numbers = _NUMBER.findall(span)
    if numbers:
        return _THOUSANDS_COMMA.sub("", numbers[-1]).replace(" ", "")
    # A boxed non-numeric answer (e.g. \pi) goes to math_verify as it is.
    return span if boxed is not None and span else None


def ground_truth(answer_text: str) -> str:
    """The number after the last '####' of a GSM8K answer ("... #### 1,200" -> "1200")."""
    if "####" not in answer_text:
        raise ValueError("GSM8K answer has no '#### N' line")
    final = extract_final_answer(answer_text.rsplit("####", 1)[1])
    if final is None:
        raise ValueError("GSM8K answer has no number after '####'")
    return final


def answers_match(gold: str, predicted: str) -> bool:
    """Whether two short math strings are equal per math_verify (thread-safe: no timeout)."""
    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(f"${predicted}$", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


# ---- registered reward functions ---------------------------------------------------


@register_reward("gsm8k_correct")
def gsm8k_correct(item: Mapping, completion: str) -> float:
    """1.0 when the completion's final answer equals the item's '#### N', else 0.0."""
    predicted = extract_final_answer(completion)
    if predicted is None:
        return 0.0
    return 1.0 if answers_match(ground_truth(item["answer"]), predicted) else 0.0


_THINK_ANSWER = re.compile(r"^<think>.*?</think>\n<answer>.*?</answer>$", re.DOTALL)


@register_reward("think_answer_format")
def think_answer_format(item: Mapping, completion: str) -> float:
    """1.0 when the whole completion is `<think>...</think>\\n<answer>...</answer>`."""
    return 1.0 if _THINK_ANSWER.match(completion) else 0.0


@register_reward("states_number")
def states_number(item: Mapping, completion: str) -> float:
    """1.0 when the completion states any number at all: a shaping reward for models (or
    tiny test models) that do not yet answer numerically, so their groups are not all 0."""
    return 1.0 if extract_final_answer(completion) is not None else 0.0


# Newlines are part of the tags so that the reward nudges towards the exact layout
# "<think>\n...\n</think>\n<answer>\n...\n</answer>", which also passes the format reward.
TAGS = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")


@register_reward("tag_count")
def tag_count(item: Mapping, completion: str) -> float:
    """0.25 for each of TAGS that appears exactly once in the completion (max 1.0)."""
    return 0.25 * sum(completion.count(tag) == 1 for tag in TAGS)


# ---- combination -------------------------------------------------------------------


def spec_pair(spec) -> tuple[str, float]:
    """(name, weight) from a pair, a {"name", "weight"} mapping or an object with both."""
    if isinstance(spec, Mapping):
        name, weight = spec["name"], spec.get("weight", 1.0)
    elif isinstance(spec, (tuple, list)):
        name, weight = spec
    else:
        name, weight = spec.name, spec.weight
    if name not in REWARD_FUNCTIONS:
        known = ", ".join(sorted(REWARD_FUNCTIONS))
        raise UserError(f"rewards: unknown reward function {name!r}; use one of {known}.")
    return name, float(weight)


def _score(name: str, fn: RewardFn, item: Mapping, completion: str, index: int) -> float:
    """fn(item, completion) as a float; 0.0 and a warning when it raises."""
    try:
        return float(fn(item, completion))
    except Exception as exc:  # a broken reward must cost one sample, not the step
        logger.warning("reward %r raised on sample %d (%s: %s); scored 0", name, index,
                       type(exc).__name__, exc)
        return 0.0


def compute_rewards(
    items: Sequence[Mapping], completions: Sequence[str], specs=DEFAULT_REWARD_SPECS
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted sum of the named reward functions over a batch.

    items[B] and completions[B] are aligned (item i is repeated for each of its
    completions). specs: (name, weight) pairs or {"name", "weight"} mappings.
    Returns total float32[B] and {name: float32[B] unweighted rewards}.
    """
    if len(items) != len(completions):
        raise ValueError(f"{len(items)} items but {len(completions)} completions")
    pairs = [spec_pair(spec) for spec in specs]
    total = np.zeros(len(completions), np.float32)
    per_fn: dict[str, np.ndarray] = {}
    for name, weight in pairs:
        fn = REWARD_FUNCTIONS[name]
        scores = np.array([_score(name, fn, item, text, i)
                           for i, (item, text) in enumerate(zip(items, completions))],
                          np.float32)
        per_fn[name] = scores
        total += np.float32(weight) * scores
    return total, per_fn


def overlong_penalty(lengths: np.ndarray, max_new_tokens: int, cache_tokens: int, max_penalty: float) -> np.ndarray:
    """DAPO's soft overlong punishment, float32[B] <= 0, for completion lengths [B] in tokens.

    0 up to max_new_tokens - cache_tokens tokens, then falling linearly to -max_penalty at
    max_new_tokens (and beyond, which the sampler never produces).
    """
    free = max_new_tokens - cache_tokens
    excess = np.clip(np.asarray(lengths, np.float64) - free, 0.0, cache_tokens)
    return (-max_penalty * excess / cache_tokens).astype(np.float32)
