"""Prefect orchestration overhead per training step (goal: <= 3% of step time).

One process, the quickstart step shape (SmolLM2-135M-Instruct, 4 prompts x 4 samples,
64 new tokens; checkpoints off on both sides so only orchestration differs):

1. plain: the same TrainSession calls as the flow's tasks in a plain Python loop
   (rollout -> reward -> advantage -> update), no Prefect, no artifacts;
2. flow: `flows.train.step_flow` (a `step-<k>` subflow with four cached tasks writing
   Parquet artifacts and manifests) plus the run observer, as `train_flow` runs them,
   on a second session in its own run directory.

Same config and seed, so both sides sample the same completions and do the same compute
step for step; the two sides alternate step by step (and swap order every step) so a
neighbour's load on a shared machine hits both alike. Reported: the paired overhead
(median over steps of (flow - plain) / plain; Parquet writes and checksums count as
overhead here) and the in-flow overhead (flow step wall time minus the phase tasks' own
compute seconds). The first `warmup` steps compile and are excluded. On a loaded machine
both carry the compute's noise, so the fixed per-step cost is also measured the same way
on a tiny random model (compute ~0) and divided by the plain quickstart step
(`fixed_overhead_fraction`), with a cProfile of that run in overhead_profile.txt next to the JSON result.

    python -m benchmarks.overhead [--steps 4] [--warmup 1]
"""
from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.report import RESULTS_DIR, steps_cli, write_result

QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart_cpu.yaml"
# Set by fixed_overhead: profiles the flow side of the steps after the first (start-up and
# compilation would otherwise dominate the profile). Not a flow parameter: it is not JSON.
_PROFILER = None


def quickstart_config(steps: int, extra: list[str] = ()):
    """The quickstart config for `steps` steps. Callers run one step fewer than that: the
    update task always checkpoints the run's last step, and only the flow side would."""
    from schemas.loading import load_run_config

    return load_run_config(QUICKSTART, [f"train.steps={steps}", "checkpoint.every_steps=1000000",
                                        "logging.progress_bar=false", "eval.every_steps=0", *extra])


async def _flow_step(flowed, observer, step: int) -> None:
    """One `step_flow` subflow plus the observer's per-step work, as train_flow runs them."""
    from flows.train import step_flow

    profiling = _PROFILER is not None and step > 0
    if profiling:
        _PROFILER.enable()
    start = time.perf_counter()
    manifests = await step_flow.with_options(flow_run_name=f"step-{step}")(flowed.run_id, step)
    observer.step_done(step, manifests, time.perf_counter() - start)
    if profiling:
        _PROFILER.disable()


async def paired_steps(cfg, root: str, steps: int) -> list[dict]:
    """Alternate a plain step and a Prefect step of two same-seed sessions; seconds of each.

    Runs inside a parent flow so each `step_flow` is a subflow, as under `train_flow`; the
    flow side's time includes the run observer's per-step work (metrics.jsonl, progress
    artifact), which train_flow also does once per step.
    """
    from benchmarks.grpo_step import plain_step
    from flows.observe import RunObserver
    from flows.train import shared_client
    from tasks.session import TrainSession

    plain, flowed = TrainSession.open(cfg, Path(root) / "plain"), TrainSession.open(cfg, Path(root) / "flow")
    observer, records = RunObserver(flowed), []
    try:
        with shared_client():  # as train_flow runs its steps
            for step in range(steps):
                record = {}
                for side in ("plain", "flow") if step % 2 == 0 else ("flow", "plain"):  # cancel order effects
                    start = time.perf_counter()
                    if side == "plain":
                        plain_step(plain, step)
                    else:
                        await _flow_step(flowed, observer, step)
                    record[side] = time.perf_counter() - start
                record["flow_compute"] = sum(flowed.timings.get(step, {}).values())
                records.append(record)
    finally:
        observer.close()
        flowed.close()
        plain.close()
    return records


def run_paired(cfg, root: Path, steps: int) -> list[dict]:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect import flow

    parent = flow(name="overhead-benchmark", persist_result=False)(paired_steps)
    return asyncio.run(parent(cfg, str(root), steps))


def summarize(records: list[dict], warmup: int) -> dict:
    """Paired and in-flow overhead over the steps after warm-up."""
    timed = records[warmup:]
    if not timed:
        raise ValueError("no steps left after warm-up; raise --steps")
    paired = [(r["flow"] - r["plain"]) / r["plain"] for r in timed]
    in_flow = [(r["flow"] - r["flow_compute"]) / r["flow"] for r in timed]
    return {
        "records": records,
        "plain_step_median_s": statistics.median(r["plain"] for r in timed),
        "flow_step_median_s": statistics.median(r["flow"] for r in timed),
        "overhead_fraction": statistics.median(paired), "paired_overhead_per_step": paired,
        "in_flow_overhead_fraction": statistics.median(in_flow),
        "in_flow_overhead_s": statistics.median(r["flow"] - r["flow_compute"] for r in timed),
        "goal": "overhead_fraction <= 0.03",
    }


TINY = ["model.name_or_path=tiny-llama", "model.init=random", "model.tokenizer=byte", "rollout.max_new_tokens=16"]


def fixed_overhead(steps: int, warmup: int, profile_path: Path | None) -> dict:
    """Absolute orchestration seconds per step, on a tiny random model whose compute is ~0.

    The paired quickstart figure carries the compute's noise; this one isolates what Prefect
    costs per step. Optionally writes a cProfile of the flow side's loop (top cumulative).
    """
    import cProfile
    import io
    import pstats

    global _PROFILER
    cfg = quickstart_config(steps + 1, TINY)
    _PROFILER = cProfile.Profile() if profile_path is not None else None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-overhead-tiny-") as tmp:
            records = run_paired(cfg, Path(tmp), steps)
        if _PROFILER is not None:
            text = io.StringIO()
            pstats.Stats(_PROFILER, stream=text).sort_stats("cumulative").print_stats(60)
            profile_path.write_text(text.getvalue())
    finally:
        _PROFILER = None
    timed = records[warmup:]
    return {"steps": steps, "records": records,
            "flow_minus_plain_s": statistics.median(r["flow"] - r["plain"] for r in timed),
            "flow_minus_compute_s": statistics.median(r["flow"] - r["flow_compute"] for r in timed)}


def run(steps: int = 4, warmup: int = 1, tiny_steps: int = 6, results_dir: Path = RESULTS_DIR) -> dict:
    cfg = quickstart_config(steps + 1)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        started = time.perf_counter()
        records = run_paired(cfg, Path(tmp), steps)
        wall = time.perf_counter() - started
    result = {"config": "configs/quickstart_cpu.yaml (checkpoints off)", "steps": steps, "warmup_steps": warmup,
              **summarize(records, warmup), "wall_seconds": wall,
              "tiny_model": fixed_overhead(tiny_steps, warmup, results_dir / "overhead_profile.txt")}
    tiny = result["tiny_model"]["flow_minus_plain_s"]
    result["fixed_overhead_fraction"] = tiny / result["plain_step_median_s"]
    write_result("overhead", result, results_dir)
    return result


def print_table(result: dict) -> None:
    print(f"\nPrefect overhead, quickstart step (median of {result['steps'] - result['warmup_steps']} steps)")
    print(f"plain loop {result['plain_step_median_s']:.2f} s/step, train_flow {result['flow_step_median_s']:.2f} s/step")
    print(f"paired overhead {100 * result['overhead_fraction']:.1f}% (goal <= 3%); in-flow overhead "
          f"{100 * result['in_flow_overhead_fraction']:.1f}% ({result['in_flow_overhead_s']:.2f} s/step)")
    print(f"fixed cost per step (tiny model): {result['tiny_model']['flow_minus_plain_s']:.2f} s = "
          f"{100 * result['fixed_overhead_fraction']:.1f}% of the plain quickstart step")


def main(argv=None) -> dict:
    return steps_cli(__doc__, run, print_table, argv)


if __name__ == "__main__":
    main()
