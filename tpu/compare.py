""""Behaves the same as before": per-step metrics of a run against a baseline run of an
earlier commit (same config and seed), within stated tolerances."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Tolerances(BaseModel):
    """What "the same" means."""

    model_config = ConfigDict(extra="forbid")
    metrics: dict[str, float] = Field(default_factory=lambda: {"loss": 0.05, "reward_mean": 0.1},
                                      description="Per-step absolute tolerance for each metrics.jsonl key.")
    step_time_ratio: float = Field(1.25, gt=1.0, le=100.0,
                                   description="Largest allowed median step time, as a multiple of the baseline's.")
    time_key: str = Field("step_seconds", description="metrics.jsonl key holding the step wall time.")


@dataclass
class Comparison:
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def check(self, passed: bool, line: str) -> None:
        self.ok = self.ok and passed
        self.lines.append(line if passed else f"FAIL {line}")

    def fail(self, line: str) -> None:
        self.check(False, line)


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _median_step_time(rows: list[dict], key: str) -> float | None:
    # The first step includes compilation; leave it out when there are others.
    times = [r[key] for r in rows[1:] or rows if key in r]
    return statistics.median(times) if times else None


def compare_runs(current: list[dict], baseline: list[dict], tol: Tolerances) -> Comparison:
    """Per-step |current - baseline| <= tolerance for every metric; median step time within the ratio."""
    result = Comparison()
    base = {r["step"]: r for r in baseline}
    now = {r["step"]: r for r in current}
    if sorted(now) != sorted(base):
        result.fail(f"steps differ: current {sorted(now)} vs baseline {sorted(base)}")
    for step in sorted(set(now) & set(base)):
        for key, limit in tol.metrics.items():
            if key not in now[step] or key not in base[step]:
                result.fail(f"step {step}: {key} missing")
                continue
            diff = abs(now[step][key] - base[step][key])
            line = f"step {step}: {key} {now[step][key]:.6g} vs {base[step][key]:.6g} (|diff| {diff:.3g} <= {limit})"
            result.check(diff <= limit, line)
    t_now, t_base = _median_step_time(current, tol.time_key), _median_step_time(baseline, tol.time_key)
    if t_now is not None and t_base:
        line = f"median {tol.time_key} {t_now:.3g}s vs {t_base:.3g}s (ratio {t_now / t_base:.2f} <= {tol.step_time_ratio})"
        result.check(t_now / t_base <= tol.step_time_ratio, line)
    return result
