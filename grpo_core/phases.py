"""The four phases of a training step as pure functions over Arrow tables.

rollout -> reward -> advantage build tables (see grpo_core.artifacts for the columns);
`update_batch` turns the rollout and advantage tables back into the padded arrays the
train step consumes. The orchestration layer (tasks/) only writes these tables to disk
and caches their manifests.
"""
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from grpo_core.advantages import compute_advantages, group_correctness_stats
from grpo_core.artifacts import ADVANTAGE_SCHEMA, ROLLOUT_SCHEMA, id_columns, reward_schema
from grpo_core.rewards import compute_rewards, overlong_penalty
from grpo_core.sampling import generate, prompt_slots
from grpo_core.tokenizer import build_prompt_ids

CORRECTNESS_REWARD = "gsm8k_correct"


def prompt_token_ids(tokenizer, items: Sequence[Mapping], system_prompt, chat_template, max_prompt_tokens) -> list[list[int]]:
    return [build_prompt_ids(tokenizer, it["question"], system_prompt, chat_template, max_prompt_tokens) for it in items]


def rollout_table(model, items: Sequence[Mapping], *, step: int, n: int, max_new_tokens: int,
                  temperature: float, top_p: float, top_k: int, seed: int, system_prompt=None,
                  chat_template=None, max_prompt_tokens: int = 256, mesh=None, min_prompt_width: int = 0) -> pa.Table:
    """Sample n completions for each item with the current policy; one row per sequence
    (prompts padded to at least `min_prompt_width` slots: `sampling.sampler_prompt_width`)."""
    prompts = prompt_token_ids(model.tokenizer, items, system_prompt, chat_template, max_prompt_tokens)
    result = generate(model, prompts, max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                      seed=seed, n=n, mesh=mesh, min_prompt_width=min_prompt_width)
    rows = len(items) * n
    group = np.repeat(np.arange(len(items), dtype=np.int32), n)
    sample = np.tile(np.arange(n, dtype=np.int32), len(items))
    item_of = [items[g] for g in group]
    completions = [list(map(int, t)) for t in result.tokens]
    columns = {
        "step": np.full(rows, step, np.int32),
        "prompt_id": np.array([int(it["prompt_id"]) for it in item_of], np.int64),
        "group_id": group,
        "sample_id": sample,
        "question": [it["question"] for it in item_of],
        "ground_truth": [it["ground_truth"] for it in item_of],
        "prompt_ids": [prompts[g] for g in group],
        "completion_ids": completions,
        "completion_text": [model.tokenizer.decode(t) for t in completions],
        "old_logps": [np.asarray(lp, np.float32).tolist() for lp in result.logps],
        "finish_reason": list(result.finish_reason),
        "prompt_length": np.array([len(prompts[g]) for g in group], np.int32),
        "completion_length": np.array([len(t) for t in completions], np.int32),
    }
    return pa.Table.from_pydict(columns, schema=ROLLOUT_SCHEMA)


def rollout_stats(table: pa.Table) -> dict[str, float]:
    lengths = np.asarray(table.column("completion_length"))
    truncated = np.asarray(table.column("finish_reason").to_pylist()) == "length"
    return {
        "completion_length_mean": float(lengths.mean()),
        "completion_length_max": float(lengths.max()),
        "truncation_rate": float(truncated.mean()),
        "sampled_tokens": float(lengths.sum()),
    }


def reward_table(rollout: pa.Table, specs, overlong=None, max_new_tokens: int | None = None
                 ) -> tuple[pa.Table, dict[str, float]]:
    """Per-function and weighted total rewards for every sequence of the rollout table.

    overlong: (cache_tokens, max_penalty) of DAPO's overlong shaping, added to the total
    as its own column `reward_overlong_penalty` (needs max_new_tokens); None = off."""
    items = [{"question": q, "answer": f"#### {gt}", "ground_truth": gt}
             for q, gt in zip(rollout.column("question").to_pylist(), rollout.column("ground_truth").to_pylist())]
    total, per_fn = compute_rewards(items, rollout.column("completion_text").to_pylist(), specs)
    if overlong is not None:
        per_fn["overlong_penalty"] = overlong_penalty(np.asarray(rollout.column("completion_length")),
                                                      max_new_tokens, *overlong)
        total = total + per_fn["overlong_penalty"]
    columns = dict(id_columns(rollout))
    columns.update({f"reward_{name}": values for name, values in per_fn.items()})
    columns["reward_total"] = total
    table = pa.Table.from_pydict(columns, schema=reward_schema(list(per_fn)))
    stats = {"reward_mean": float(total.mean()), "reward_std": float(total.std())}
    stats.update({f"reward_{name}_mean": float(v.mean()) for name, v in per_fn.items()})
    return table, stats


def advantage_table(rewards: pa.Table, group_size: int, estimator: str, eps: float, std_ddof: int,
                    clip: float | None) -> tuple[pa.Table, dict[str, float]]:
    """Group advantages of the total reward, plus group statistics (pass@k when gsm8k_correct is used)."""
    total = np.asarray(rewards.column("reward_total"), np.float32)
    adv, stats = compute_advantages(estimator, total, group_size, eps=eps, std_ddof=std_ddof, clip=clip)
    correct_column = f"reward_{CORRECTNESS_REWARD}"
    if correct_column in rewards.column_names:
        stats.update(group_correctness_stats(np.asarray(rewards.column(correct_column)), group_size))
    columns = dict(id_columns(rewards))
    columns.update({"reward_total": total, "advantage": adv})
    return pa.Table.from_pydict(columns, schema=ADVANTAGE_SCHEMA), stats


def select_groups(tables: Sequence[pa.Table], totals: Sequence[np.ndarray], n: int,
                  batch_size: int) -> tuple[pa.Table, dict[str, float]]:
    """DAPO dynamic sampling: `batch_size` groups out of the rounds' rollout tables.

    tables[r] / totals[r]: round r's rows (groups of n contiguous) and their total rewards.
    Takes the groups with reward spread in sampling order; when there are fewer than
    batch_size it fills the batch with groups without spread (they get advantage 0),
    when there are more it keeps the first. group_id is renumbered 0..batch_size-1.
    """
    table = pa.concat_tables(tables)
    rewards_gk = np.concatenate(totals).reshape(-1, n)
    spread = rewards_gk.max(axis=1) > rewards_gk.min(axis=1)
    order = np.concatenate([np.flatnonzero(spread), np.flatnonzero(~spread)])[:batch_size]
    table = table.take(pa.array((order[:, None] * n + np.arange(n)).reshape(-1)))
    group_ids = pa.array(np.repeat(np.arange(batch_size, dtype=np.int32), n))
    table = table.set_column(table.schema.get_field_index("group_id"), "group_id", group_ids)
    filled = max(0, batch_size - int(spread.sum()))
    return table, {"dynamic_sampling_rounds": float(len(tables)), "groups_sampled": float(spread.size),
                   "groups_dropped": float(spread.size - batch_size), "groups_filled": float(filled)}


def update_width(longest_prompt: int, max_new_tokens: int) -> int:
    """Columns of the train batch (`update_batch`): the sampler's prompt width, then the completion slots."""
    return prompt_slots(longest_prompt) + max_new_tokens


def update_batch(rollout: pa.Table, advantages: pa.Table, max_new_tokens: int, pad_id: int,
                 prompt_width: int | None = None, mask_truncated: bool = False,
                 sampler_logps: bool = False) -> dict[str, np.ndarray]:
    """Padded train-step arrays [B, T]: left-padded prompt, then completion, then right padding.

    T = `sampling.prompt_slots` of the longest prompt (or of `prompt_width`, the longest over
    every process) + max_new_tokens: the same prompt buckets as the sampler, so a run
    compiles the update for as few shapes as the sampler, and completions always fill the
    LAST max_new_tokens columns (the train step scores only those: Trainer(score_last=...)).
    Returns tokens_bt, positions_bt, attn_mask_bt, completion_mask_bt (int32) and
    advantages_b (float32); with sampler_logps also sampler_logps_bt (float32: the
    rollout's `old_logps` at their tokens' columns). mask_truncated: completions that hit
    max_new_tokens (finish_reason "length") get no valid tokens (DAPO's overlong filtering).
    """
    prompts = rollout.column("prompt_ids").to_pylist()
    completions = rollout.column("completion_ids").to_pylist()
    total = update_width(max(prompt_width or 0, *(len(p) for p in prompts)), max_new_tokens)
    width = total - max_new_tokens
    tokens = np.full((len(prompts), total), pad_id, np.int32)
    attn = np.zeros_like(tokens)
    completion_mask = np.zeros_like(tokens)
    sampled = np.zeros(tokens.shape, np.float32)
    old_logps = rollout.column("old_logps").to_pylist() if sampler_logps else [()] * len(prompts)
    for row, (prompt, completion, logps) in enumerate(zip(prompts, completions, old_logps)):
        start = width - len(prompt)
        end = width + len(completion)
        tokens[row, start:width], tokens[row, width:end] = prompt, completion
        attn[row, start:end] = 1
        completion_mask[row, width:end] = 1
        sampled[row, width:width + len(logps)] = logps
    if mask_truncated:
        truncated = np.asarray(rollout.column("finish_reason").to_pylist()) == "length"
        completion_mask[truncated] = 0
    positions = np.maximum(np.cumsum(attn, axis=1) - 1, 0).astype(np.int32)
    extra = {"sampler_logps_bt": sampled} if sampler_logps else {}
    return extra | {
        "tokens_bt": tokens,
        "positions_bt": positions,
        "attn_mask_bt": attn,
        "completion_mask_bt": completion_mask,
        "advantages_b": np.asarray(advantages.column("advantage"), np.float32),
    }


def padding_stats(batch: dict[str, np.ndarray], max_new_tokens: int) -> dict[str, float]:
    """Padding cost of an `update_batch`: padded / real tokens of the prompt columns (the
    prompt buckets' cost, the same in the sampler's prefill) and of the whole batch
    (completions shorter than max_new_tokens included)."""
    attn, completion = batch["attn_mask_bt"], batch["completion_mask_bt"]
    rows, width = attn.shape
    real_prompt = float(attn.sum() - completion.sum())
    real = float(attn.sum())
    return {"pad_prompt_ratio": (rows * (width - max_new_tokens) - real_prompt) / max(real_prompt, 1.0),
            "pad_update_ratio": (rows * width - real) / max(real, 1.0)}
