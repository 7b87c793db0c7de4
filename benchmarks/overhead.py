"""Prefect orchestration overhead per training step (goal: <= 3% of step time).

One process, the quickstart step shape (SmolLM2-135M-Instruct, 4 prompts x 4 samples,
64 new tokens; checkpoints off on both sides so only orchestration differs):

1. plain: the same TrainSession calls as the flow's tasks in a plain Python loop
   (rollout -> reward -> advantage -> update), no Prefect, no artifacts;
2. flow: `flows.train.train_flow` (one `step-<k>` flow run per step, four cached tasks
   writing Parquet artifacts and manifests) in a second run directory.

Same config and seed, so both sides sample the same completions and do the same
compute step for step. Reported: the paired overhead (median over steps of flow step
minus plain step, over the plain step; Parquet writes and checksums count as overhead
here) and the in-flow overhead the run itself records (step wall time minus the phase
tasks' own compute seconds, from metrics.jsonl). The first `warmup` steps of each side
compile and are excluded.

    python -m benchmarks.overhead [--steps 4] [--warmup 1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.report import write_result

QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart_cpu.yaml"


def quickstart_config(steps: int):
    from schemas.loading import load_run_config

    return load_run_config(QUICKSTART, [f"train.steps={steps}", "checkpoint.every_steps=1000000",
                                        "logging.progress_bar=false", "eval.every_steps=0"])


def run_plain(cfg, run_dir: Path) -> list[float]:
    """Wall seconds of each step in a plain loop."""
    from benchmarks.grpo_step import plain_step
    from tasks.session import TrainSession

    session = TrainSession.open(cfg, run_dir)
    try:
        return [plain_step(session, step)["step"] for step in range(cfg.train.steps)]
    finally:
        session.close()


def run_flow(cfg, run_dir: Path) -> list[dict]:
    """metrics.jsonl records of a train_flow run (step_seconds, time_<phase>, overhead)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.train import train_flow

    asyncio.run(train_flow(config=cfg, run_dir=str(run_dir)))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines if line), key=lambda r: r["step"])


def summarize(plain: list[float], flow: list[dict], warmup: int) -> dict:
    """Paired and in-flow overhead over the steps after warm-up."""
    pairs = list(zip(plain, flow))[warmup:]
    if not pairs:
        raise ValueError("no steps left after warm-up; raise --steps")
    paired = [(f["step_seconds"] - p) / p for p, f in pairs]
    in_flow = [f["orchestration_overhead_s"] / f["step_seconds"] for _, f in pairs]
    plain_median = statistics.median(p for p, _ in pairs)
    flow_median = statistics.median(f["step_seconds"] for _, f in pairs)
    return {
        "plain_step_seconds": plain, "flow_step_seconds": [f["step_seconds"] for f in flow],
        "flow_phase_seconds": [{k: v for k, v in f.items() if k.startswith("time_")} for f in flow],
        "plain_step_median_s": plain_median, "flow_step_median_s": flow_median,
        "overhead_fraction": statistics.median(paired), "paired_overhead_per_step": paired,
        "in_flow_overhead_fraction": statistics.median(in_flow),
        "in_flow_overhead_s": statistics.median(f["orchestration_overhead_s"] for _, f in pairs),
        "goal": "overhead_fraction <= 0.03",
    }


def run(steps: int = 4, warmup: int = 1) -> dict:
    cfg = quickstart_config(steps)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        started = time.perf_counter()
        plain = run_plain(cfg, Path(tmp) / "plain")
        flow = run_flow(cfg, Path(tmp) / "flow")
        wall = time.perf_counter() - started
    result = {"config": "configs/quickstart_cpu.yaml (checkpoints off)", "steps": steps, "warmup_steps": warmup,
              **summarize(plain, flow, warmup), "wall_seconds": wall}
    write_result("overhead", result)
    return result


def print_table(result: dict) -> None:
    print(f"\nPrefect overhead, quickstart step (median of {result['steps'] - result['warmup_steps']} steps)")
    print(f"plain loop {result['plain_step_median_s']:.2f} s/step, train_flow {result['flow_step_median_s']:.2f} s/step")
    print(f"paired overhead {100 * result['overhead_fraction']:.1f}% (goal <= 3%); in-flow overhead "
          f"{100 * result['in_flow_overhead_fraction']:.1f}% ({result['in_flow_overhead_s']:.2f} s/step)")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per side, warm-up included")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    result = run(args.steps, args.warmup)
    print_table(result)
    return result


if __name__ == "__main__":
    main()
