"""What one step of staleness costs on the CPU quickstart: the reward curve with
rollout.max_staleness = 1 next to 0, for a few sampling seeds (measured, not predicted).

    python -m benchmarks.staleness_curve [--seeds 0,1,2] [--steps 24] [--out DIR]

Each cell is `grpo train -q --config configs/quickstart_cpu.yaml --set train.seed=K
--set rollout.max_staleness=S` as a user types it (a subprocess, its own run directory and
embedded Prefect server; one CPU device, so with s = 1 sampling and training take turns on
the same device and the run measures the lag's effect on learning, not the overlap's speed).
Seeds vary the sampling and the prompt order; the model and the data are the same. Writes
staleness_curve.json (every step's mean reward and correctness per cell) and prints the
table of correctness over the first and last windows of steps, per seed and averaged.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import environment, run_dir

CONFIG = "configs/quickstart_cpu.yaml"
WINDOW = 6  # steps averaged at the start and at the end of a curve


def train(run: Path, seed: int, staleness: int, steps: int) -> dict:
    """One quickstart run; its per-step metrics and wall time."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    command = [sys.executable, "-m", "flows.cli.main", "train", "-q", "--config", CONFIG, "--run-dir", str(run),
               "--set", f"train.seed={seed}", "--set", f"rollout.max_staleness={staleness}",
               "--set", f"train.steps={steps}"]
    run.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"seed {seed} s={staleness}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    metrics = (run / "metrics.jsonl").read_text()
    (run.parent / f"{run.name}.metrics.jsonl").write_text(metrics)
    shutil.rmtree(run)  # a quickstart's checkpoints are GBs; the curve needs only its metrics
    records = [json.loads(line) for line in metrics.splitlines() if line.strip()]
    return {"seed": seed, "max_staleness": staleness, "seconds": round(seconds, 1),
            "params_version": [r.get("rollout_params_version") for r in records],
            "reward": [r["reward_mean"] for r in records],
            "correct": [r["reward_gsm8k_correct_mean"] for r in records]}


def run(seeds, steps: int, out: Path, work: Path) -> list[dict]:
    cells = []
    for seed in seeds:  # s = 0 and s = 1 side by side per seed, so a partial run still compares
        for staleness in (0, 1):
            cell = train(work / f"s{staleness}-seed{seed}", seed, staleness, steps)
            cells.append(cell)
            print(f"seed {seed} s={staleness}: {cell['seconds']:.0f} s, correctness first {WINDOW} "
                  f"{_mean(cell['correct'][:WINDOW]):.3f} -> last {WINDOW} {_mean(cell['correct'][-WINDOW:]):.3f}",
                  flush=True)
            (out / "staleness_curve.json").write_text(json.dumps(
                {"environment": environment(), "config": CONFIG, "steps": steps, "window": WINDOW, "cells": cells},
                indent=1))
    return cells


def _mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def table(cells: list[dict], steps: int) -> str:
    lines = [f"| seed | max_staleness | correct, steps 0-{WINDOW - 1} | correct, steps {steps - WINDOW}-{steps - 1} | "
             "gain | correct, all steps | wall s |", "|---|---|---|---|---|---|---|"]
    for cell in cells:
        first, last = _mean(cell["correct"][:WINDOW]), _mean(cell["correct"][-WINDOW:])
        lines.append(f"| {cell['seed']} | {cell['max_staleness']} | {first:.3f} | {last:.3f} | {last - first:+.3f} | "
                     f"{_mean(cell['correct']):.3f} | {cell['seconds']:.0f} |")
    for staleness in (0, 1):
        mine = [c for c in cells if c["max_staleness"] == staleness]
        if mine:
            first = _mean([_mean(c["correct"][:WINDOW]) for c in mine])
            last = _mean([_mean(c["correct"][-WINDOW:]) for c in mine])
            lines.append(f"| mean of {len(mine)} | {staleness} | {first:.3f} | {last:.3f} | {last - first:+.3f} | "
                         f"{_mean([_mean(c['correct']) for c in mine]):.3f} | "
                         f"{_mean([c['seconds'] for c in mine]):.0f} |")
    return "\n".join(lines)


def curves(cells: list[dict]) -> str:
    """Per step, correctness averaged over the seeds: s = 0 next to s = 1."""
    by = {s: [c["correct"] for c in cells if c["max_staleness"] == s] for s in (0, 1)}
    steps = min(len(c) for group in by.values() for c in group) if all(by.values()) else 0
    lines = ["| step | " + " | ".join(f"correct s={s} (mean of {len(by[s])})" for s in (0, 1)) + " |",
             "|---|---|---|"]
    for step in range(steps):
        lines.append(f"| {step} | " + " | ".join(f"{_mean([c[step] for c in by[s]]):.3f}" for s in (0, 1)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--out", type=Path, help="results folder (default: a new one under ~/.cache/grpo-flows/benchmarks)")
    parser.add_argument("--report", type=Path, help="print the tables of an earlier staleness_curve.json and exit")
    args = parser.parse_args(argv)
    if args.report:
        data = json.loads(args.report.read_text())
        print(table(data["cells"], data["steps"]) + "\n\n" + curves(data["cells"]))
        return 0
    out = args.out or run_dir()
    out.mkdir(parents=True, exist_ok=True)
    cells = run([int(s) for s in args.seeds.split(",")], args.steps, out, out / "runs")
    print(table(cells, args.steps) + "\n\n" + curves(cells) + f"\n\nresults in {out / 'staleness_curve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
