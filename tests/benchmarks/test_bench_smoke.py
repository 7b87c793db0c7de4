"""Unit tests of the benchmark harness's pure parts: growth fit, medians, ratio table, JSON.

No benchmark runs here (they take minutes); `python -m benchmarks run --quick` does that.
"""
import json

import numpy as np
import pytest

from benchmarks.report import (
    environment, fit_power_law, load_results, markdown_table, median_after_warmup, ratio_rows, write_result,
)


def test_fit_recovers_exponent_and_coefficient():
    xs = np.array([1, 2, 4, 8])
    fit = fit_power_law(xs, 0.5 * xs**1.5)
    assert fit["exponent"] == pytest.approx(1.5)
    assert fit["coefficient"] == pytest.approx(0.5)
    assert fit["r2"] == pytest.approx(1.0)


def test_fit_of_noisy_linear_growth_is_near_one():
    rng = np.random.default_rng(0)
    xs = np.array([32, 64, 128, 256])
    fit = fit_power_law(xs, 0.01 * xs * np.exp(rng.normal(0, 0.02, xs.size)))
    assert 0.9 < fit["exponent"] < 1.1 and fit["r2"] > 0.98


def test_fit_needs_two_distinct_points():
    with pytest.raises(ValueError):
        fit_power_law([4, 4], [1.0, 2.0])


def test_median_skips_warmup():
    assert median_after_warmup([100.0, 1.0, 3.0, 2.0], warmup=1) == 2.0
    with pytest.raises(ValueError):
        median_after_warmup([1.0], warmup=1)


def _results():
    return {
        "grpo_step": {"speedup": {"step": 3.5, "rollout": 3.0, "update": 1.5}},
        "decode_cpu": {"summary": {"speedup": 1.4}},
        "update_flops": {"fraction_of_matmul": 0.6},
        "overhead": {"overhead_fraction": 0.05, "fixed_overhead_fraction": 0.02},
        "scaling": {"curves": {"batch": {"x": "rollout.batch_size (prompts)", "fit": {"exponent": 0.8}}}},
    }


def test_ratio_rows_judge_goals():
    met = {row[0]: row[3] for row in ratio_rows(_results())}
    assert met["step speedup vs TRL GRPOTrainer"] == "yes"
    assert met["rollout tokens/s vs HF generate"] == "no"
    assert met["update FLOP/s / matmul FLOP/s"] == "yes"
    assert met["Prefect overhead / step"] == "no"
    assert met["Prefect fixed cost / plain step"] == "yes"
    assert "x^0.80" in markdown_table(_results())


def test_missing_results_are_skipped():
    assert ratio_rows({}) == []
    assert markdown_table({}).count("\n") == 2


def test_write_and_load_roundtrip(tmp_path):
    path = write_result("overhead", {"overhead_fraction": np.float64(0.02)}, results_dir=tmp_path)
    body = json.loads(path.read_text())
    assert body["benchmark"] == "overhead" and body["overhead_fraction"] == 0.02
    assert {"date", "machine", "load_average_1m", "command"} <= set(body["environment"])
    assert load_results(["overhead", "scaling"], results_dir=tmp_path) == {"overhead": body}


def test_environment_records_versions():
    assert "jax" in environment()["versions"]


def test_overhead_summary_pairs_steps_after_warmup():
    from benchmarks.overhead import summarize

    records = [{"plain": 50.0, "flow": 60.0, "flow_compute": 55.0},
               {"plain": 10.0, "flow": 10.2, "flow_compute": 10.0},
               {"plain": 20.0, "flow": 20.6, "flow_compute": 20.1}]
    out = summarize(records, warmup=1)
    assert out["overhead_fraction"] == pytest.approx((0.02 + 0.03) / 2)
    assert out["in_flow_overhead_s"] == pytest.approx((0.2 + 0.5) / 2)
    with pytest.raises(ValueError):
        summarize(records[:1], warmup=1)


def test_checkpoint_write_reports_cpu_and_bytes_of_both_modes(tmp_path):
    import jax.numpy as jnp

    from benchmarks.checkpoint_write import save_once

    state = {"w": jnp.zeros((1024, 1024), jnp.float32)}  # 4 MiB that zstd shrinks to almost nothing
    compressed, raw = (save_once(state, compress, tmp_path) for compress in (True, False))
    assert raw["bytes_on_disk"] >= 4 * 2**20 > 8 * compressed["bytes_on_disk"]
    assert all(r["cpu_s"] > 0 and r["wall_s"] >= r["blocking_s"] for r in (compressed, raw))
    assert list(tmp_path.iterdir()) == []  # each save's folder removed
