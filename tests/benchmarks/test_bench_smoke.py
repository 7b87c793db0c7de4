"""Unit tests of the benchmark harness's pure parts: growth fit, medians, ratio table, JSON.

No benchmark runs here (they take minutes); `python -m benchmarks run --quick` does that.
"""
import json

import numpy as np
import pytest

from benchmarks.report import (
    environment, fit_power_law, load_results, markdown_table, ratio_rows, run_dir, write_result,
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


def _step(like=1.5, skip=4.2, gain=2.8, zero_std=0.5, wanted=1, found=1):
    return {"speedup_no_skip": {"step": like, "rollout": 1.06, "update": 1.93},
            "speedup": {"step": skip, "rollout": 1.06, "update": 67.5},
            "skip_gain": {"step": gain, "rollout": 1.0, "update": 35.0},
            "zero_std_group_fraction": zero_std, "signal_steps_wanted": wanted, "signal_steps_found": found}


def _results():
    return {
        "grpo_step": _step(),
        "decode_cpu": {"summary": {"speedup": 1.4, "fraction_of_streaming_floor": 0.62}},
        "update_flops": {"fraction_of_matmul": 0.6},
        "overhead": {"overhead_fraction": 0.05, "fixed_overhead_fraction": 0.02},
        "scaling": {"curves": {"batch": {"x": "rollout.batch_size (prompts)", "fit": {"exponent": 0.8}}}},
    }


def test_the_first_step_row_is_like_for_like_and_the_skip_carries_its_zero_std_fraction():
    rows = ratio_rows(_results())
    step_rows = [r for r in rows if "GRPO step" in r[0] or "skip" in r[0]]
    assert step_rows[0][:4] == ("GRPO step vs TRL GRPOTrainer, like for like (no skipping)", "1.50x", ">= 2x", "no")
    skip_rows = [r for r in rows if "skip:" in r[0] or "with the skip" in r[0]]
    assert [r[1] for r in skip_rows] == ["2.80x", "4.20x"]
    assert all("zero-std group fraction 0.50" in r[0] for r in skip_rows)
    assert rows.index(step_rows[0]) < min(rows.index(r) for r in skip_rows)
    assert "4.20x" not in rows[0]


def test_a_run_without_signal_steps_says_so():
    said = [r[0] for r in ratio_rows({"grpo_step": _step(found=0)})]
    assert any("no timed step had a group with untied rewards" in text for text in said)
    assert not any("untied" in r[0] for r in ratio_rows({"grpo_step": _step()}))


def test_ratio_rows_judge_goals():
    met = {row[0]: row[2:] for row in ratio_rows(_results())}
    assert met["rollout tokens/s / weight-streaming floor (CPU)"] == (">= 50%", "yes")
    assert met["rollout tokens/s vs HF generate"] == ("-", "-")
    assert not any(">= 5x" in row[2] for row in ratio_rows(_results()))
    assert met["update FLOP/s / matmul FLOP/s"][1] == "yes"
    assert met["Prefect overhead / step"][1] == "no"
    assert met["Prefect fixed cost / plain step"][1] == "yes"
    with_skip = next(v for k, v in met.items() if k.startswith("GRPO step vs TRL GRPOTrainer with the skip"))
    assert with_skip == (">= 3x", "yes")
    floor = {r[0]: r[3] for r in ratio_rows({"decode_cpu": {"summary": {"speedup": 9.0,
                                                                       "fraction_of_streaming_floor": 0.3}}})}
    assert floor["rollout tokens/s / weight-streaming floor (CPU)"] == "no"
    assert "x^0.80" in markdown_table(_results())


def test_quick_mode_times_signal_steps_and_falls_back_to_all_timed_steps():
    from benchmarks.grpo_step import enough_steps, measured_indices, medians

    records = [{"zero_std_group_fraction": z, "step": float(i)} for i, z in enumerate([0.75, 1.0, 0.5, 1.0])]
    assert not enough_steps(records[:2], steps=2, warmup=1, signal_steps=1)
    assert enough_steps(records[:3], steps=2, warmup=1, signal_steps=1)
    assert measured_indices(records, warmup=1, signal_steps=1) == [2]
    assert medians(records, [2])["step"] == 2.0
    tied = [{"zero_std_group_fraction": 1.0, "step": 1.0}] * 3
    assert measured_indices(tied, warmup=1, signal_steps=1) == [1, 2]
    assert measured_indices(records, warmup=1, signal_steps=0) == [1, 2, 3]


def test_step_summary_lines_put_like_for_like_first():
    from benchmarks.grpo_step import summary_lines

    lines = summary_lines({**_step(), "steps": 3})
    assert lines[0].startswith("like for like") and "1.50x" in lines[0]
    assert "zero-std group fraction 0.50" in lines[1] and "4.20x" in lines[1]


def test_decode_streams_the_tied_head_once_and_an_untied_embedding_not_at_all():
    from benchmarks.decode_cpu import streamed_bytes

    layers = {"w": np.zeros((2, 8), np.float32)}
    tied = {"embed": np.zeros((10, 4), np.float32), "layers": layers, "final_norm": np.zeros(4, np.float32)}
    assert streamed_bytes(tied) == 4 * (40 + 16 + 4)
    untied = {**tied, "lm_head": np.zeros((4, 10), np.float32)}
    assert streamed_bytes(untied) == 4 * (40 + 16 + 4)


def test_harness_writes_outside_the_repository_unless_asked(tmp_path, monkeypatch):
    from benchmarks.report import RESULTS_DIR, results_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    default = results_folder(None, update_committed=False)
    assert default.parent == tmp_path / "grpo-flows" / "benchmarks" and default.is_dir()
    assert results_folder(tmp_path / "mine", update_committed=False) == tmp_path / "mine"
    assert results_folder(None, update_committed=True) == RESULTS_DIR
    assert run_dir(tmp_path / "r").parent == tmp_path / "r"


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
