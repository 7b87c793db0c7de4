"""Leaving zero-advantage groups out of the update's forward and backward, in one program.

With beta = 0 (no KL term) and every token in the policy-gradient term (no entropy-based
token selection), a row whose advantage is 0 contributes exactly 0 to the loss and its
gradient: every term of the clipped surrogate (and of TIS, dual clip, GSPO's sequence
ratio) is a multiple of the advantage. A row without valid tokens (batch padding, a
truncated completion under loss.mask_truncated) contributes nothing either. GRPO gives a
whole group 0 when its rewards are all equal, which is often half of a small batch.

The unit skipped is the micro-batch (train.micro_batch_size). `arrange_batch` runs on the
host before the batch is sharded: it moves the groups with an informative row into the
micro-batches that run first and returns how many micro-batches hold one (k). The update
keeps the batch's full shape and runs its micro-batch loop k times (a trip count passed as
an argument), so every step runs the SAME compiled program whatever k is: one update
program per prompt width, as without the skip (the compile budget in
docs/configuration.md). The batch is only reordered, so the loss's normaliser is the full
step's, computed in the program as always; the summed gradient equals the full update's up to float32 summation order.
A step with one micro-batch (micro_batch_size = sequences per device) skips only when no
group is informative; smaller micro-batches let it skip in steps of one micro-batch.
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


def slot_last_micro_batch(rows: int, group_size: int, micro_batches: int, chunk: int) -> np.ndarray:
    """int [G]: the last micro-batch each group position of a process's rows falls into.

    The update splits the batch into `micro_batches` by chunks of `chunk` consecutive rows
    (chunk c goes to micro-batch c mod M; train_step._split_micro_batches). A process's
    rows start at a chunk index that is a multiple of M, so the local index gives the same
    micro-batch as the global one."""
    micro_of_row = (np.arange(rows) // chunk) % micro_batches
    return micro_of_row.reshape(rows // group_size, group_size).max(axis=1)


def micro_batches_needed(groups: int, slot_last: np.ndarray) -> int:
    """Micro-batches that must run when `groups` informative groups take the group positions
    that end earliest (see arrange_batch)."""
    if groups <= 0:
        return 0
    return int(np.sort(slot_last, kind="stable")[min(groups, slot_last.size) - 1]) + 1


def arrange_batch(batch: dict, group_size: int, micro_batches: int, chunk: int,
                  min_groups: int = 0) -> tuple[dict, int]:
    """(this process's rows reordered, micro-batches to run).

    batch: numpy, groups of `group_size` contiguous rows. The informative groups (in their
    order) take the group positions whose rows end in the earliest micro-batches, the others
    fill the rest; groups stay whole and contiguous. min_groups: run at least the
    micro-batches that this many informative groups would need (with several processes: the
    largest `informative_groups` count of any process, so all run the same trip count)."""
    rows = batch["tokens_bt"].shape[0]
    keep = informative_groups(batch, group_size)
    slot_last = slot_last_micro_batch(rows, group_size, micro_batches, chunk)
    run = micro_batches_needed(max(int(keep.sum()), int(min_groups)), slot_last)
    if keep.all():
        return batch, run
    slots = np.argsort(slot_last, kind="stable")
    group_at_slot = np.empty(keep.size, np.int64)
    group_at_slot[slots] = np.concatenate([np.flatnonzero(keep), np.flatnonzero(~keep)])
    index = (group_at_slot[:, None] * group_size + np.arange(group_size)).reshape(-1)
    return {k: np.asarray(v)[index] for k, v in batch.items()}, run
