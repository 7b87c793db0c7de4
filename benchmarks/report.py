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
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from flows.cli.main import positive_int

RESULTS_DIR = Path(__file__).parent / "results"
# CPU decode goal: tokens/s at least this fraction of the rate at which the machine can stream
# the model's weights once per decode step (the bound no implementation beats at few rows);
# the GPU suite's decode goal is the same fraction of its bandwidth bound.
DECODE_FLOOR_GOAL = 0.5
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


def step_rows(step: dict) -> list[tuple[str, str, str, str]]:
    """The GRPO-step rows: like for like (no skipping) first, then the skip's gain and the
    with-skip ratio, each with the zero-std group fraction of the steps they cover."""
    like, skip, gain = step["speedup_no_skip"], step["speedup"], step["skip_gain"]
    zero_std = f"zero-std group fraction {step['zero_std_group_fraction']:.2f}"
    rows = [("GRPO step vs TRL GRPOTrainer, like for like (no skipping)", f"{like['step']:.2f}x", ">= 2x",
             _goal_met(like["step"], 2.0, True)),
            ("  rollout, like for like", f"{like['rollout']:.2f}x", "-", "-"),
            ("  update, like for like", f"{like['update']:.2f}x", "-", "-"),
            (f"zero-advantage skip: our step's gain over no skipping ({zero_std})", f"{gain['step']:.2f}x", "-", "-"),
            (f"GRPO step vs TRL GRPOTrainer with the skip ({zero_std})", f"{skip['step']:.2f}x", ">= 3x",
             _goal_met(skip["step"], 3.0, True))]
    if step.get("signal_steps_wanted") and not step.get("signal_steps_found"):
        rows.append(("no timed step had a group with untied rewards: the skip rows measure all-tied batches",
                     "-", "-", "-"))
    return rows


def decode_rows(decode: dict) -> list[tuple[str, str, str, str]]:
    """Decode as a fraction of the weight-streaming floor (the goal), and vs HF generate (context)."""
    summary = decode["summary"]
    rows = []
    floor = summary.get("fraction_of_streaming_floor")
    if floor is not None:
        rows.append(("rollout tokens/s / weight-streaming floor (CPU)", f"{100 * floor:.1f}%",
                     f">= {100 * DECODE_FLOOR_GOAL:.0f}%", _goal_met(floor, DECODE_FLOOR_GOAL, True)))
    rows.append(("rollout tokens/s vs HF generate", f"{summary['speedup']:.2f}x", "-", "-"))
    return rows


def ratio_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(metric, measured, goal, met) rows from the results of one run (missing ones skipped)."""
    rows = []
    if results.get("grpo_step"):
        rows += step_rows(results["grpo_step"])
    if results.get("decode_cpu"):
        rows += decode_rows(results["decode_cpu"])
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


def run_dir(root: Path | None = None) -> Path:
    """A fresh folder for one harness run's results, outside the repository by default:
    <root or $XDG_CACHE_HOME/grpo-flows/benchmarks>/<UTC timestamp>."""
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grpo-flows" / "benchmarks"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = root / stamp
    path.mkdir(parents=True, exist_ok=False)
    return path


def results_folder(out: Path | None, update_committed: bool) -> Path:
    """Where this run writes: the committed folder only when asked, else --out or a new cache folder."""
    if update_committed:
        return RESULTS_DIR
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        return out
    return run_dir()


def steps_cli(doc: str, run, print_table, argv=None) -> dict:
    """Command line of a per-step benchmark: --steps (warm-up included), --warmup and --out."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=4, help="steps per side, warm-up included")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON result (default: a new timestamped folder under "
                             "~/.cache/grpo-flows/benchmarks)")
    args = parser.parse_args(argv)
    out = args.out or run_dir()
    out.mkdir(parents=True, exist_ok=True)
    result = run(args.steps, args.warmup, results_dir=out)
    print_table(result)
    return result
