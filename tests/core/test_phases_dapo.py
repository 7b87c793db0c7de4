"""DAPO pieces of the phases: dynamic-sampling group selection, truncated-completion
masking and the sampler's log-probs in the train batch."""
import numpy as np
import pyarrow as pa

from grpo_core.artifacts import ROLLOUT_SCHEMA
from grpo_core.phases import select_groups, update_batch
from grpo_core.sampling import prompt_slots


def rollout(groups: int, n: int, first_prompt: int = 0, lengths=None, finish=None) -> pa.Table:
    rows = groups * n
    lengths = lengths if lengths is not None else [2 + r % 3 for r in range(rows)]
    completions = [[10 + r] * length for r, length in enumerate(lengths)]
    return pa.Table.from_pydict({
        "step": np.zeros(rows, np.int32), "prompt_id": np.repeat(np.arange(groups) + first_prompt, n).astype(np.int64),
        "group_id": np.repeat(np.arange(groups), n).astype(np.int32), "sample_id": np.tile(np.arange(n), groups).astype(np.int32),
        "question": ["q"] * rows, "ground_truth": ["1"] * rows,
        "prompt_ids": [[1, 2, 3][: 1 + r % 3] for r in range(rows)], "completion_ids": completions,
        "completion_text": ["c"] * rows,
        "old_logps": [[-0.5 - 0.1 * r - 0.01 * t for t in range(len(c))] for r, c in enumerate(completions)],
        "finish_reason": finish or ["eos"] * rows, "prompt_length": np.array([1 + r % 3 for r in range(rows)], np.int32),
        "completion_length": np.array(lengths, np.int32),
    }, schema=ROLLOUT_SCHEMA)


def test_select_groups_takes_groups_with_spread_in_sampling_order():
    n = 3
    tables = [rollout(4, n, 0), rollout(4, n, 100)]
    totals = [np.array([1, 1, 1, 0, 1, 0, 2, 2, 2, 0, 0, 1.]), np.array([0, 0, 0, 5, 4, 5, 1, 1, 1, 3, 3, 3.])]
    table, stats = select_groups(tables, totals, n, 3)
    prompts = table.column("prompt_id").to_pylist()
    assert prompts == [1] * n + [3] * n + [101] * n       # spread: groups 1, 3 of round 0, group 1 of round 1
    assert table.column("group_id").to_pylist() == [0] * n + [1] * n + [2] * n
    assert stats == {"dynamic_sampling_rounds": 2.0, "groups_sampled": 8.0, "groups_dropped": 5.0, "groups_filled": 0.0}


def test_select_groups_fills_with_dropped_groups_when_the_cap_is_hit():
    n = 2
    table, stats = select_groups([rollout(3, n)], [np.array([1, 1, 0, 1, 2, 2.])], n, 3)
    assert table.column("prompt_id").to_pylist() == [1, 1, 0, 0, 2, 2]
    assert stats["groups_filled"] == 2.0 and stats["groups_dropped"] == 0.0


def test_update_batch_masks_truncated_completions_and_places_sampler_logps():
    table = rollout(2, 2, lengths=[3, 4, 1, 4], finish=["eos", "length", "eos", "length"])
    adv = pa.table({"advantage": np.ones(4, np.float32)})
    plain = update_batch(table, adv, max_new_tokens=4, pad_id=0)
    masked = update_batch(table, adv, max_new_tokens=4, pad_id=0, mask_truncated=True,
                          sampler_logps=True)
    assert plain["completion_mask_bt"].sum(1).tolist() == [3, 4, 1, 4]
    assert masked["completion_mask_bt"].sum(1).tolist() == [3, 0, 1, 0]
    width = prompt_slots(3)  # the sampler's prompt width for prompts of <= 3 tokens, then 4 completion columns
    logps = table.column("old_logps").to_pylist()
    for row, lp in enumerate(logps):
        np.testing.assert_allclose(masked["sampler_logps_bt"][row, width:width + len(lp)], lp, rtol=1e-6)
        assert (masked["sampler_logps_bt"][row, width + len(lp):] == 0).all()
        assert (masked["tokens_bt"][row, width:width + len(lp)] == 10 + row).all()
    assert "sampler_logps_bt" not in plain
