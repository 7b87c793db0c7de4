"""`python -m benchmarks run [--quick] [--only NAME ...] [--out DIR | --update-committed]`.

Every CPU benchmark in ONE process. Order: full GRPO step vs TRL, rollout vs HF generate,
update vs matmul, Prefect overhead, scaling curves. Each writes <name>.json into the
run's results folder; the run ends with the ratio table (printed and written there as
summary.md). The folder is a new one under ~/.cache/grpo-flows/benchmarks/<UTC time> by
default, so a run leaves the checkout as it was; `--out DIR` names another, and
`--update-committed` writes into benchmarks/results/ (the figures the repository keeps).
A benchmark that fails is reported and the others still run (exit code 1). The GPU suite
is separate (`python -m benchmarks.gpu_suite` on a GPU machine).

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
from pathlib import Path  # noqa: E402

from benchmarks import report  # noqa: E402

ORDER = ("grpo_step", "decode_cpu", "update_flops", "overhead", "scaling")


def _grpo_step(quick: bool, out: Path):
    from benchmarks import grpo_step

    # Quick mode times one step, so it keeps stepping (at most 3 more) until a timed step's
    # groups carry signal: an all-tied batch makes the skip's figures those of an empty update.
    shape = dict(steps=2, signal_steps=1, max_steps=5) if quick else dict(steps=6)
    grpo_step.print_table(grpo_step.run(warmup=1, results_dir=out, **shape))


def _decode_cpu(quick: bool, out: Path):
    from benchmarks import decode_cpu

    decode_cpu.main(["--prompts", "8" if quick else "16", "--new-tokens", "64", "--repeats", "1" if quick else "3",
                     "--out", str(out / "decode_cpu.json")])


def _update_flops(quick: bool, out: Path):
    from benchmarks import update_flops

    update_flops.main(["--repeats", "3" if quick else "7", "--out", str(out / "update_flops.json")])


def _overhead(quick: bool, out: Path):
    from benchmarks import overhead

    overhead.print_table(overhead.run(steps=3 if quick else 6, warmup=1, results_dir=out))


def _scaling(quick: bool, out: Path):
    from benchmarks import scaling

    scaling.print_table(scaling.run(quick, results_dir=out))


RUNNERS = {"grpo_step": _grpo_step, "decode_cpu": _decode_cpu, "update_flops": _update_flops,
           "overhead": _overhead, "scaling": _scaling}


def run_all(names, quick: bool, out: Path) -> dict[str, str]:
    """Run the named benchmarks in order; {name: "ok (N s)" | "failed: ..."}."""
    status = {}
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            RUNNERS[name](quick, out)
            status[name] = f"ok ({time.perf_counter() - started:.0f} s)"
        except Exception as err:  # one broken peer must not lose the other figures
            traceback.print_exc()
            status[name] = f"failed: {type(err).__name__}: {err}"
    return status


def summary_markdown(status: dict[str, str], quick: bool, out: Path) -> str:
    env = report.environment()
    lines = [f"# benchmark run {env['date']} ({'quick' if quick else 'full'})", "",
             f"machine: {env['machine']}, {env['cpu_count']} CPUs, load average (1 min) at the end "
             f"{env['load_average_1m']:.1f}", "", report.markdown_table(report.load_results(status, out)),
             "| benchmark | status |", "|---|---|"]
    lines += [f"| {name} | {state} |" for name, state in status.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="grpo-flows performance harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the CPU benchmarks and print the ratio table")
    run.add_argument("--quick", action="store_true", help="fewer steps and points (< 15 minutes on 2 cores)")
    run.add_argument("--only", nargs="+", choices=ORDER, help="run only these benchmarks")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="results folder (default: a new one under "
                                                "~/.cache/grpo-flows/benchmarks/<UTC time>)")
    where.add_argument("--update-committed", action="store_true",
                       help=f"write into {report.RESULTS_DIR} (the committed figures) instead")
    args = parser.parse_args(argv)
    out = report.results_folder(args.out, args.update_committed)
    started = time.perf_counter()
    status = run_all(args.only or ORDER, args.quick, out)
    text = summary_markdown(status, args.quick, out)
    text += f"\ntotal wall time {time.perf_counter() - started:.0f} s\n"
    (out / "summary.md").write_text(text)
    print("\n" + text + f"\nresults in {out}")
    return 0 if all(s.startswith("ok") for s in status.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
