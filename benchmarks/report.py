"""Results of `python -m benchmarks run`: JSON files, growth fits and the markdown ratio table.

Pure numpy and the standard library (no jax, no torch) so the unit tests stay fast.
Every JSON result carries the environment it was measured in (date, machine, load
average, library versions, command line): on a small shared machine the load average
is part of the figure.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from flows.cli.main import positive_int

RESULTS_DIR = Path(__file__).parent / "results"
PACKAGES = ("jax", "jaxlib", "torch", "transformers", "trl", "prefect")


def environment() -> dict:
    """Date, machine, load and library versions of this measurement."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": versions,
    }


def median_after_warmup(seconds: list[float], warmup: int) -> float:
    """Median of the timings after the first `warmup` (which include compilation)."""
    timed = seconds[warmup:]
    if not timed:
        raise ValueError(f"{len(seconds)} timings leave none after {warmup} warm-up steps")
    return statistics.median(timed)


def fit_power_law(xs, ys) -> dict:
    """Least-squares fit of y = a * x**k in log-log space: {"exponent": k, "coefficient": a, "r2"}.

    k ~ 1 means linear growth, k < 1 sub-linear (fixed costs or batching win), k > 1
    super-linear (e.g. attention over a growing context).
    """
    x, y = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("a growth fit needs at least two distinct x values")
    k, log_a = np.polyfit(x, y, 1)
    residual = y - (k * x + log_a)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 1.0
    return {"exponent": float(k), "coefficient": float(np.exp(log_a)), "r2": r2}


def write_result(name: str, result: dict, results_dir: Path = RESULTS_DIR) -> Path:
    """results_dir/<name>.json with the environment attached; returns the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    body = {"benchmark": name, "environment": environment(), **result}
    path.write_text(json.dumps(body, indent=2, default=float) + "\n")
    return path


def _goal_met(value: float | None, goal: float, higher_is_better: bool) -> str:
    if value is None:
        return "not measured"
    return "yes" if (value >= goal if higher_is_better else value <= goal) else "no"


def ratio_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(metric, measured, goal, met) rows from the results of one run (missing ones skipped)."""
    rows = []
    step = results.get("grpo_step")
    if step:
        for part in ("step", "rollout", "update"):
            ratio = step["speedup"].get(part)
            goal = ">= 3x" if part == "step" else "-"
            met = _goal_met(ratio, 3.0, True) if part == "step" else "-"
            rows.append((f"{part} speedup vs TRL GRPOTrainer", f"{ratio:.2f}x", goal, met))
    decode = results.get("decode_cpu")
    if decode:
        speedup = decode["summary"]["speedup"]
        rows.append(("rollout tokens/s vs HF generate", f"{speedup:.2f}x", ">= 5x", _goal_met(speedup, 5.0, True)))
    flops = results.get("update_flops")
    if flops:
        frac = flops["fraction_of_matmul"]
        rows.append(("update FLOP/s / matmul FLOP/s", f"{100 * frac:.1f}%", ">= 50%", _goal_met(frac, 0.5, True)))
    overhead = results.get("overhead")
    if overhead:
        frac = overhead["overhead_fraction"]
        rows.append(("Prefect overhead / step", f"{100 * frac:.1f}%", "<= 3%", _goal_met(frac, 0.03, False)))
        fixed = overhead.get("fixed_overhead_fraction")
        if fixed is not None:  # tiny-model fixed cost over the plain step: not blurred by compute noise
            rows.append(("Prefect fixed cost / plain step", f"{100 * fixed:.1f}%", "<= 3%",
                         _goal_met(fixed, 0.03, False)))
    scaling = results.get("scaling")
    if scaling:
        for curve in scaling["curves"].values():
            rows.append((f"step time growth vs {curve['x']}", f"x^{curve['fit']['exponent']:.2f}", "-", "-"))
    return rows


def markdown_table(results: dict) -> str:
    """The ratio table as GitHub markdown."""
    lines = ["| metric | measured | goal | met |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in ratio_rows(results)]
    return "\n".join(lines) + "\n"


def load_results(names, results_dir: Path = RESULTS_DIR) -> dict:
    """{name: parsed JSON} for the result files that exist."""
    found = {}
    for name in names:
        path = results_dir / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def steps_cli(doc: str, run, print_table, argv=None) -> dict:
    """Command line of a per-step benchmark: --steps (warm-up included) and --warmup."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=4, help="steps per side, warm-up included")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    result = run(args.steps, args.warmup)
    print_table(result)
    return result
