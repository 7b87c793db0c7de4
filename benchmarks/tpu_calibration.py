"""The analytic memory estimate against XLA's TPU compiler, over a grid (issue "TPU without a TPU").

Each cell is a config (Qwen2.5 0.5B/1.5B/3B/7B x two batch shapes x two sequence lengths)
on a slice (v6e-8, v5e-8, v6e-16); for each cell the run's rollout and update programs are
compiled for that slice on this CPU host (flows/compile_check.py: libtpu's compile-only
client) and XLA's per-device bytes are set beside `grpo preflight`'s estimate.

    python -m benchmarks.tpu_calibration run [--jsonl FILE]     compile (XLA's answers are
        kept per program in ~/.cache/grpo-flows/xla-tpu, so a rerun only lowers)
    python -m benchmarks.tpu_calibration report [--jsonl FILE]  re-estimate against the saved
        XLA figures (no compile) and print the markdown table for RESULTS.md

Cells are compiled one process per phase (a fresh libtpu per cell keeps host memory flat).
Bounds: estimate/XLA within [0.9, 1.25] per cell and phase.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

BASE = "configs/grpo_gsm8k_qwen25_3b_bs128_steps100.yaml"
MODELS = {"0.5B": "Qwen/Qwen2.5-0.5B-Instruct", "1.5B": "Qwen/Qwen2.5-1.5B-Instruct",
          "3B": "Qwen/Qwen2.5-3B-Instruct", "7B": "Qwen/Qwen2.5-7B-Instruct"}
BATCHES = {"16x8": (16, 8), "64x8": (64, 8)}
LENGTHS = {"256+512": (256, 512), "128+1024": (128, 1024)}
SLICES = ("v6e-8", "v5e-8", "v6e-16")
PHASES = ("rollout", "update")
BOUNDS = (0.9, 1.25)
DEFAULT_JSONL = Path(__file__).parent / "results" / "tpu_calibration.jsonl"


def cell_overrides(model: str, batch: str, length: str) -> list[str]:
    (prompts, n), (prompt_len, new) = BATCHES[batch], LENGTHS[length]
    return [f"model.name_or_path={MODELS[model]}", f"rollout.batch_size={prompts}", f"rollout.n={n}",
            f"rollout.max_prompt_tokens={prompt_len}", f"rollout.max_new_tokens={new}", "eval.every_steps=0",
            "rollout.weights_layout=fsdp"]  # the training layout: the grid calibrates it


def jobs() -> list[tuple[str, ...]]:
    """(model, batch, length, slice, phase): the shipped shape on v6e-8 first (both phases,
    every model), then every rollout (under a minute each on an idle host), then the
    updates (minutes each); within a phase shape by shape, every slice and model."""
    first = [(m, "16x8", "256+512", "v6e-8", p) for m in MODELS for p in PHASES]
    rest = [(m, b, n, s, p) for p in PHASES for b, n, s, m in itertools.product(BATCHES, LENGTHS, SLICES, MODELS)]
    rest.sort(key=lambda j: (PHASES.index(j[4]), (j[1], j[2]) != ("16x8", "256+512")))
    return first + [j for j in rest if j not in first]


def compile_cell(model: str, batch: str, length: str, slice_name: str, phase: str) -> list[dict]:
    """XLA's figures for one cell and phase (runs in the child process)."""
    from flows.compile_check import compile_config, default_cache_dir
    from grpo_core.memory import get_accelerator
    from schemas import load_run_config

    cfg = load_run_config(BASE, cell_overrides(model, batch, length))
    compiled = compile_config(cfg, get_accelerator(slice_name), (phase,), default_cache_dir())
    rows = []
    for phase, result in compiled.items():
        rows.append({"model": model, "batch": batch, "length": length, "slice": slice_name, "phase": phase,
                     "xla_bytes": result.xla_bytes, "oom": result.oom, "cached": result.cached,
                     "compile_seconds": round(result.seconds, 1),
                     "xla": None if result.memory is None else vars(result.memory),
                     "error": None if result.error is None else result.error.strip().splitlines()[0][:300]})
    return rows


def estimate_row(row: dict) -> dict:
    """The current estimate for a saved row, with its components (no compile)."""
    from flows.compile_check import phase_estimates
    from flows.preflight import run_preflight
    from schemas import load_run_config

    cfg = load_run_config(BASE, cell_overrides(row["model"], row["batch"], row["length"]))
    report = run_preflight(cfg, row["slice"])
    estimate = phase_estimates(report.estimate)[row["phase"]]
    return {**row, "estimate_bytes": estimate, "ratio": estimate / row["xla_bytes"] if row["xla_bytes"] else None}


def run(jsonl: Path, only: str | None, reverse: bool = False) -> None:
    """Compile the cells not yet in `jsonl`. Two runs may share one file (one with
    --reverse): each re-reads it before a cell, so they meet in the middle."""
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    for cell in (reversed(jobs()) if reverse else jobs()):
        if cell in {_cell(r) for r in _read(jsonl)} or (only and only not in " ".join(cell)):
            continue
        rows = run_child("benchmarks.tpu_calibration", cell, jsonl)
        if rows is None:
            continue
        print(" ".join(cell), [(r["phase"], r["compile_seconds"], r["xla_bytes"]) for r in rows], flush=True)


def run_child(module: str, args, jsonl: Path) -> list[dict] | None:
    """Run `python -m module child *args` (one compile in a fresh process, so libtpu's host
    memory goes with it), append the row(s) it prints last to `jsonl` and return them;
    None (and its stderr's tail) when it fails."""
    out = subprocess.run([sys.executable, "-m", module, "child", *args], capture_output=True, text=True)
    if out.returncode:
        print(f"{tuple(args)}: child failed\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = result if isinstance(result, list) else [result]
    with jsonl.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def _cell(row: dict) -> tuple[str, ...]:
    return row["model"], row["batch"], row["length"], row["slice"], row["phase"]


def _read(jsonl: Path) -> list[dict]:
    """The saved rows, one per cell and phase (a cell compiled twice keeps its first,
    uncached compile: its compile time is the one worth reporting)."""
    rows: dict[tuple, dict] = {}
    lines = jsonl.read_text().splitlines() if jsonl.exists() else []
    for row in map(json.loads, filter(str.strip, lines)):
        if _cell(row) not in rows or rows[_cell(row)]["cached"] and not row["cached"]:
            rows[_cell(row)] = row
    return list(rows.values())


def report(jsonl: Path) -> list[dict]:
    """Markdown table of estimate/XLA per cell; returns the rows (with ratios)."""
    rows = [estimate_row(r) for r in _read(jsonl)]
    gib = 1024**3
    print("| model | prompts x n | prompt+new | slice | phase | XLA GiB | estimate GiB | estimate/XLA | compile s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        xla = f"{r['xla_bytes'] / gib:.2f}" + (" (OOM)" if r["oom"] else "") if r["xla_bytes"] else "n/a"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "n/a"
        flag = "" if r["ratio"] and BOUNDS[0] <= r["ratio"] <= BOUNDS[1] else " **out of bounds**"
        print(f"| {r['model']} | {r['batch']} | {r['length']} | {r['slice']} | {r['phase']} | {xla} | "
              f"{r['estimate_bytes'] / gib:.2f} | {ratio}{flag} | {'(cached)' if r['cached'] else r['compile_seconds']} |")
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    if ratios:
        print(f"\n{len(ratios)} cells: estimate/XLA from {min(ratios):.2f} to {max(ratios):.2f}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "report", "child"))
    parser.add_argument("cell", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", type=Path, default=DEFAULT_JSONL)
    parser.add_argument("--only", help="run: only cells whose model/batch/length/slice contain this text")
    parser.add_argument("--reverse", action="store_true", help="run: last cells first (a second run beside a first)")
    args = parser.parse_args(argv)
    if args.mode == "child":
        print(json.dumps(compile_cell(*args.cell)))
    elif args.mode == "run":
        run(args.jsonl, args.only, args.reverse)
    else:
        report(args.jsonl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
