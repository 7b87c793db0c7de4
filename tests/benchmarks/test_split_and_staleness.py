"""Unit tests of the split step-time model (benchmarks.split_step) and the staleness-curve
tables (benchmarks.staleness_curve): their arithmetic on hand-made rows. The benchmarks
themselves compile for TPU slices or train the quickstart (minutes to an hour)."""
import pytest

from benchmarks import split_step, staleness_curve
from benchmarks.tpu_roofline import RATES

V6E = RATES["v6e"]


def _row(sampler_devices: int, rollout_hbm_bytes: float, update_flops: float, publish_bytes: int = 0) -> dict:
    """A v6e-8 cell whose rollout is HBM-bound (one decode step, no prefill work) and whose
    update is FLOP-bound."""
    return {"config": "c.yaml", "slice": "v6e-8", "hosts": 1, "sampler_devices": sampler_devices,
            "trainer_devices": 8 - sampler_devices if sampler_devices else 8, "sampler_chips": sampler_devices or 8,
            "capacity_bytes": 100, "rollout_xla_bytes": 10, "update_xla_bytes": 20,
            "publish_bytes_per_sampler_chip": publish_bytes,
            "rollout": {"weight_bytes": 1, "weights_read_per_device": rollout_hbm_bytes, "kv_cache_per_device": 0,
                        "decode_collective_bytes": {}, "decode_flops": 0.0, "prefill_collective_bytes": 0.0,
                        "prefill_flops": 0.0, "max_new_tokens": 1},
            "update": {"flops": update_flops, "collective_bytes": 0.0, "hbm_bytes_lower_bound": 0}}


def test_the_synchronous_step_adds_rollout_and_update_and_the_split_overlaps_them():
    sync = _row(0, rollout_hbm_bytes=2 * V6E["hbm"], update_flops=1 * V6E["flops"])
    # A rollout is a prefill (one pass over the weights) and max_new_tokens decode steps: 2 x 2 s.
    assert split_step.rollout_seconds(sync) == pytest.approx(4.0)
    assert split_step.update_seconds(sync) == (pytest.approx(1.0), "flops")
    assert split_step.step_seconds(sync) == pytest.approx(5.0)
    split = _row(4, rollout_hbm_bytes=2 * V6E["hbm"], update_flops=2 * V6E["flops"], publish_bytes=int(V6E["ici"] / 10))
    assert split_step.step_seconds(split) == pytest.approx(max(4.0, 2.0) + 0.1)  # + publish over ICI


def test_the_report_compares_each_split_with_the_synchronous_step_of_its_config_and_slice():
    rows = [_row(0, 2 * V6E["hbm"], V6E["flops"]), _row(4, 2 * V6E["hbm"], 2 * V6E["flops"])]
    text = split_step.report_rows(rows)
    assert "| synchronous | all 8 |" in text and "| 1.00x |" in text
    assert f"| {5.0 / 4.0:.2f}x |" in text


def test_a_cell_that_does_not_fit_says_so():
    row = _row(4, 1.0, 1.0)
    row["update_xla_bytes"] = 101
    assert not split_step.fits(row)


def test_the_staleness_table_compares_the_first_and_last_windows_per_seed_and_on_average():
    cells = [{"seed": s, "max_staleness": m, "seconds": 10.0, "reward": [0.0] * 12,
              "correct": [0.25] * 6 + [0.5 + 0.25 * m] * 6} for s in (0, 1) for m in (0, 1)]
    text = staleness_curve.table(cells, 12)
    assert "| mean of 2 | 0 | 0.250 | 0.500 | +0.250 |" in text
    assert "| mean of 2 | 1 | 0.250 | 0.750 | +0.500 |" in text
    curve = staleness_curve.curves(cells)
    assert "| 11 | 0.500 | 0.750 |" in curve
