"""`grpo status RUN_DIR`: what a run has done, read from its directory alone.

Steps done of the configured total, the last step's metrics line, whether a process is
training it now (the holder of its run lock), the checkpoints on disk and how much the
phase artifacts take. Nothing is loaded and nothing is written.
"""
import argparse
import json
from pathlib import Path

from grpo_core.errors import UserError


def _size(paths) -> tuple[int, int]:
    files = [p for p in paths if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _records(run_dir: Path) -> dict[int, dict]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {r["step"]: r for r in map(json.loads, filter(None, lines))}


def _training_now(run_dir: Path) -> str:
    from tasks.locks import lock_holder

    holders = [h for h in map(lock_holder, sorted(run_dir.glob("run*.lock"))) if h]
    return f"yes, pid {', '.join(holders)} (holds the run lock)" if holders else "no"


def status_lines(run_dir: Path) -> list[str]:
    """The report, one line per fact."""
    from flows.console import step_line
    from schemas.loading import read_yaml

    if not (run_dir / "config.yaml").is_file():
        what = "does not exist" if not run_dir.exists() else "is not a run directory (no config.yaml)"
        raise UserError(f"RUN_DIR {run_dir} {what}; pass a directory made by `grpo train` (e.g. runs/quickstart_cpu)")
    steps = read_yaml(run_dir / "config.yaml").get("train", {}).get("steps", "?")
    records = _records(run_dir)
    checkpoints = sorted(int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit())
    artifacts, artifact_bytes = _size((run_dir / "steps").rglob("*"))
    _, checkpoint_bytes = _size((run_dir / "checkpoints").rglob("*"))
    return [
        f"run: {run_dir}",
        f"steps done: {len(records)} of {steps}",
        f"last step: {step_line(records[max(records)]) if records else 'none yet'}",
        f"training now: {_training_now(run_dir)}",
        f"checkpoints: {', '.join(map(str, checkpoints)) or 'none'} ({human_bytes(checkpoint_bytes)})",
        f"artifacts: {artifacts} files, {human_bytes(artifact_bytes)} in steps/",
    ]


def status(args: argparse.Namespace) -> int:
    print("\n".join(status_lines(Path(args.run_dir))))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("status", help="what a run has done and whether it is training now")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (e.g. runs/quickstart_cpu)")
    parser.set_defaults(handler=status)
