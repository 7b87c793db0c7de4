"""Leaving zero-advantage groups out of the update's forward and backward.

With beta = 0 (no KL term) and every token in the policy-gradient term (no entropy-based
token selection), a row whose advantage is 0 contributes exactly 0 to the loss and its
gradient: every term of the clipped surrogate (and of TIS, dual clip, GSPO's sequence
ratio) is a multiple of the advantage. A row without valid tokens (batch padding, a
truncated completion under loss.mask_truncated) contributes nothing either. GRPO gives a
whole group 0 when its rewards are all equal, which is often half of a small batch.

`compact_batch` runs on the host before the batch is sharded: it keeps the groups with
any informative row (in their order), fills up to a bucketed row count with other groups
whose completion mask and advantages are zeroed, and adds `row_tokens_b`: the valid-token
count of every row of the FULL batch, from which the train step computes the loss's
denominator (token_mean still divides by all valid tokens of the step). Buckets: the
full micro-batch size times 1..M micro-batches, then one micro-batch of half, a quarter,
... of it, keeping whole groups; so a run compiles the update for at most
M + log2(micro-batch rows) shapes, not one per step. The summed gradient equals the full
update's up to float32 summation order.
"""
from __future__ import annotations

import numpy as np


def row_tokens(completion_mask_bt: np.ndarray) -> np.ndarray:
    """float32 [B]: tokens each row contributes to the loss (column 0 is never scored)."""
    return np.asarray(completion_mask_bt)[:, 1:].astype(np.float32).sum(axis=1)


def informative_groups(batch: dict, group_size: int) -> np.ndarray:
    """bool [G]: groups (of `group_size` consecutive rows) with a row that has a non-zero
    advantage and at least one valid token."""
    rows = (np.asarray(batch["advantages_b"]) != 0) & (row_tokens(batch["completion_mask_bt"]) > 0)
    return rows.reshape(-1, group_size).any(axis=1)


def bucket_shapes(rows: int, shards: int, micro_batches: int, group_size: int) -> list[tuple[int, int]]:
    """(rows, micro-batches) a compacted batch of this process may take, fewest rows first.

    rows: this process's full batch; shards: its batch shards (devices / tp)."""
    per_micro = rows // (shards * micro_batches)  # rows per shard per micro-batch
    shapes = {(shards * per_micro * m, m) for m in range(1, micro_batches + 1)}
    smaller = per_micro
    while smaller % 2 == 0:
        smaller //= 2
        shapes.add((shards * smaller, 1))
    return sorted(s for s in shapes if s[0] % group_size == 0)


def micro_batches_of(rows: int, full_rows: int, shards: int, micro_batches: int) -> int:
    """Micro-batches of a batch of `rows` compacted from `full_rows` (see bucket_shapes)."""
    per_micro = full_rows // (shards * micro_batches)
    return max(1, rows // (shards * per_micro))


def compact_batch(batch: dict, group_size: int, shards: int, micro_batches: int,
                  min_groups: int = 0) -> tuple[dict, int]:
    """The rows of `batch` the update needs to run, and how many rows that is.

    batch: this process's rows (numpy, groups contiguous). min_groups: run at least this
    many groups (every process must compile the same shape: pass the largest informative
    group count over processes). Returns the batch unchanged when no bucket is smaller.
    """
    rows = batch["tokens_bt"].shape[0]
    keep = informative_groups(batch, group_size)
    need = max(int(keep.sum()), int(min_groups), 1) * group_size
    bucket = next(r for r, _ in bucket_shapes(rows, shards, micro_batches, group_size) if r >= need)
    if bucket >= rows:
        return batch, rows
    order = np.concatenate([np.flatnonzero(keep), np.flatnonzero(~keep)])[: bucket // group_size]
    index = (order[:, None] * group_size + np.arange(group_size)).reshape(-1)
    out = {k: np.asarray(v)[index] for k, v in batch.items()}
    filler = np.repeat(~keep[order], group_size)
    out["completion_mask_bt"] = np.where(filler[:, None], 0, out["completion_mask_bt"]).astype(
        out["completion_mask_bt"].dtype)
    out["advantages_b"] = np.where(filler, 0.0, out["advantages_b"]).astype(np.float32)
    out["row_tokens_b"] = row_tokens(batch["completion_mask_bt"])
    return out, bucket
