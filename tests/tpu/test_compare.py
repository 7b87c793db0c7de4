"""Baseline comparison and reaper selection (pure functions)."""
from tpu.compare import Tolerances, compare_runs
from tpu.provider import Node
from tpu.teardown import expired

BASE = [{"step": s, "loss": 0.5 / s, "reward_mean": 0.1 * s, "step_seconds": 10.0 if s == 1 else 1.0} for s in (1, 2, 3)]


def test_same_run_passes_and_drift_fails():
    assert compare_runs(BASE, BASE, Tolerances()).ok
    drift = [dict(r, loss=r["loss"] + (0.2 if r["step"] == 2 else 0.0)) for r in BASE]
    result = compare_runs(drift, BASE, Tolerances())
    assert not result.ok and any(line.startswith("FAIL step 2: loss") for line in result.lines)


def test_step_time_ratio_ignores_the_compile_step():
    slow_compile = [dict(r, step_seconds=100.0) if r["step"] == 1 else r for r in BASE]
    assert compare_runs(slow_compile, BASE, Tolerances()).ok
    slow = [dict(r, step_seconds=r["step_seconds"] * 2) for r in BASE]
    result = compare_runs(slow, BASE, Tolerances(step_time_ratio=1.5))
    assert not result.ok and "ratio 2.00" in result.lines[-1]


def test_missing_steps_fail():
    assert not compare_runs(BASE[:2], BASE, Tolerances()).ok


def test_expired_nodes():
    nodes = [Node("a", "z", "v6e-8", created_at=1000.0), Node("b", "z", "v6e-8", created_at=9000.0), Node("c", "z", "v6e-8")]
    assert [n.name for n in expired(nodes, ttl_s=3600, now=10000.0)] == ["a", "c"]
