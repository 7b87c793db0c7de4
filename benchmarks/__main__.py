"""`python -m benchmarks run [--quick] [--only NAME ...]`: every CPU benchmark in ONE process.

Order: full GRPO step vs TRL, rollout vs HF generate, update vs matmul, Prefect overhead,
scaling curves. Each writes results/<name>.json; the run ends with the ratio table
(printed and written to results/summary.md). A benchmark that fails is reported and
the others still run (exit code 1). The GPU suite is separate (`python -m
benchmarks.gpu_suite` on a GPU machine).

JAX is pinned to ONE CPU device before it is imported: torch runs on one (multi-threaded)
device too, so the comparison is device for device.
"""
from __future__ import annotations

import os
import re

os.environ["XLA_FLAGS"] = " ".join(
    [re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")).strip(),
     "--xla_force_host_platform_device_count=1"]).strip()

import argparse  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from benchmarks import report  # noqa: E402

ORDER = ("grpo_step", "decode_cpu", "update_flops", "overhead", "scaling")


def _grpo_step(quick: bool):
    from benchmarks import grpo_step

    grpo_step.print_table(grpo_step.run(steps=2 if quick else 6, warmup=1))


def _decode_cpu(quick: bool):
    from benchmarks import decode_cpu

    out = report.RESULTS_DIR / "decode_cpu.json"
    decode_cpu.main(["--prompts", "8" if quick else "16", "--new-tokens", "64", "--repeats", "1" if quick else "3",
                     "--out", str(out)])


def _update_flops(quick: bool):
    from benchmarks import update_flops

    update_flops.main(["--repeats", "3" if quick else "7"])


def _overhead(quick: bool):
    from benchmarks import overhead

    overhead.print_table(overhead.run(steps=3 if quick else 6, warmup=1))


def _scaling(quick: bool):
    from benchmarks import scaling

    scaling.print_table(scaling.run(quick))


RUNNERS = {"grpo_step": _grpo_step, "decode_cpu": _decode_cpu, "update_flops": _update_flops,
           "overhead": _overhead, "scaling": _scaling}


def run_all(names, quick: bool) -> dict[str, str]:
    """Run the named benchmarks in order; {name: "ok (N s)" | "failed: ..."}."""
    status = {}
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            RUNNERS[name](quick)
            status[name] = f"ok ({time.perf_counter() - started:.0f} s)"
        except Exception as err:  # one broken peer must not lose the other figures
            traceback.print_exc()
            status[name] = f"failed: {type(err).__name__}: {err}"
    return status


def summary_markdown(status: dict[str, str], quick: bool) -> str:
    env = report.environment()
    lines = [f"# benchmark run {env['date']} ({'quick' if quick else 'full'})", "",
             f"machine: {env['machine']}, {env['cpu_count']} CPUs, load average (1 min) at the end "
             f"{env['load_average_1m']:.1f}", "", report.markdown_table(report.load_results(ORDER)),
             "| benchmark | status |", "|---|---|"]
    lines += [f"| {name} | {state} |" for name, state in status.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="grpo-flows performance harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the CPU benchmarks and print the ratio table")
    run.add_argument("--quick", action="store_true", help="fewer steps and points (< 15 minutes on 2 cores)")
    run.add_argument("--only", nargs="+", choices=ORDER, help="run only these benchmarks")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    status = run_all(args.only or ORDER, args.quick)
    text = summary_markdown(status, args.quick)
    text += f"\ntotal wall time {time.perf_counter() - started:.0f} s\n"
    (report.RESULTS_DIR / "summary.md").write_text(text)
    print("\n" + text)
    return 0 if all(s.startswith("ok") for s in status.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
