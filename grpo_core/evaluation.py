"""Held-out evaluation of one model as pure functions over Arrow tables.

`completions_table` decodes every held-out problem greedily once and, with samples=k,
k more times at the sampling temperature, and scores every completion with the same
rewards registry as training (plus gsm8k_correct, which defines accuracy, at weight 0
when the config does not train on it). `problem_scores` turns that table into
per-problem scores, the unit a paired bootstrap resamples (grpo_core.stats).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from grpo_core.advantages import group_correctness
from grpo_core.phases import CORRECTNESS_REWARD, reward_table, rollout_table
from grpo_core.rewards import spec_pair

GREEDY, SAMPLED = "greedy", "sampled"
_CORRECT = f"reward_{CORRECTNESS_REWARD}"


def reward_specs(specs: Sequence) -> list[tuple[str, float]]:
    """(name, weight) pairs of the config's rewards, plus gsm8k_correct at weight 0 if absent."""
    pairs = [spec_pair(spec) for spec in specs]
    if CORRECTNESS_REWARD not in {name for name, _ in pairs}:
        pairs.append((CORRECTNESS_REWARD, 0.0))
    return pairs


def _scored(rollout: pa.Table, specs, decoding: str) -> pa.Table:
    """Rollout columns + every reward column + which decoding made the row."""
    rewards, _ = reward_table(rollout, specs)
    table = rollout
    for name in rewards.column_names:
        if name.startswith("reward_"):
            table = table.append_column(name, rewards.column(name))
    return table.append_column("decoding", pa.array([decoding] * table.num_rows, pa.string()))


def completions_table(model, items: Sequence[Mapping], *, rewards: Sequence, samples: int, max_new_tokens: int,
                      temperature: float, top_p: float, top_k: int, seed: int, system_prompt=None,
                      chat_template=None, max_prompt_tokens: int = 256, mesh=None) -> pa.Table:
    """One greedy completion per item, then (samples > 0) `samples` sampled ones, all scored."""
    specs = reward_specs(rewards)
    common = dict(step=0, max_new_tokens=max_new_tokens, top_p=top_p, top_k=top_k, seed=seed,
                  system_prompt=system_prompt, chat_template=chat_template,
                  max_prompt_tokens=max_prompt_tokens, mesh=mesh)
    tables = [_scored(rollout_table(model, items, n=1, temperature=0.0, **common), specs, GREEDY)]
    if samples:
        sampled = rollout_table(model, items, n=samples, temperature=temperature, **common)
        tables.append(_scored(sampled, specs, SAMPLED))
    return pa.concat_tables(tables)


def _by_prompt(table: pa.Table, column: str) -> np.ndarray:
    """Values of `column` [P, k]: rows grouped by prompt_id (ascending), samples in order."""
    prompt_ids = np.asarray(table.column("prompt_id"))
    order = np.lexsort((np.asarray(table.column("sample_id")), prompt_ids))
    values = np.asarray(table.column(column), np.float64)[order]
    return values.reshape(len(np.unique(prompt_ids)), -1)


def problem_scores(table: pa.Table) -> dict[str, np.ndarray]:
    """Per-problem scores [P] (problems by ascending prompt_id) of a `completions_table`.

    accuracy: greedy correctness; reward: greedy total reward; tokens: greedy completion
    length; with sampled rows also pass@1, pass@k and mean@k over the k samples.
    """
    decoding = np.asarray(table.column("decoding").to_pylist())
    greedy = table.filter(pa.array(decoding == GREEDY))
    scores = {
        "accuracy": _by_prompt(greedy, _CORRECT)[:, 0],
        "reward": _by_prompt(greedy, "reward_total")[:, 0],
        "tokens": _by_prompt(greedy, "completion_length")[:, 0],
    }
    sampled = table.filter(pa.array(decoding == SAMPLED))
    if sampled.num_rows:
        correct_pk = _by_prompt(sampled, _CORRECT)
        scores.update(group_correctness(correct_pk.reshape(-1), correct_pk.shape[1]))
    return scores
