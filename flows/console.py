"""What every `grpo` command shows on the terminal: one log format, a live view, quiet/verbose.

Lines look like Prefect's own console format (`HH:MM:SS.mmm | LEVEL | logger - message`).
Prefect's per-run engine chatter ("Beginning subflow run", "Finished in state
Completed()", ...) is INFO on the `prefect.flow_runs`/`prefect.task_runs` loggers; it
still reaches the Prefect API (their own handler), but on the terminal it counts as
DEBUG, shown only with --verbose (so are the bare `prefect` logger's INFO notes).
Warnings and errors are always shown, except Prefect's ERROR records of a run that failed
with a `UserError` (its tracebacks, "Finished in state Failed"): the CLI prints the error
as one sentence, the records still reach the Prefect API, and --verbose shows them.

In a terminal a training run adds a live view at the bottom (rich). The console handler
looks up `sys.stderr` at every record rather than holding the stream: while the live
view runs, rich swaps in a proxy that prints each line above the view, so log lines
scroll above it and never share its line. Redirected to a file there is no live view
and no control characters: just the log lines, one `step=N ...` line per step.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from grpo_core.errors import UserError

FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"
DATE_FORMAT = "%H:%M:%S"
QUIET, NORMAL, VERBOSE = -1, 0, 1
# Run state lines, the run's "View at <url>" (the embedded server has no UI), and the bare
# `prefect` logger's notes (the embedded server starting and stopping, with a link).
_CHATTER_LOGGERS = ("prefect", "prefect.engine", "prefect.flow_runs", "prefect.task_runs")
# Prefect's event and log workers warn whenever they are drained with items still queued,
# which is the case at the end of every run: nothing a user can act on.
_DRAIN_NOTE = "Still processing items"
_state = {"verbosity": NORMAL}


class ConsoleHandler(logging.Handler):
    """Formats records onto whatever `sys.stderr` is at the time (see the module docstring)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


class RunChatterFilter(logging.Filter):
    """Drops Prefect's INFO-level run state lines unless the terminal shows DEBUG."""

    def __init__(self, show: bool):
        super().__init__()
        self.show = show

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name in _CHATTER_LOGGERS:
            return self.show
        if record.getMessage().startswith(_DRAIN_NOTE):
            return self.show
        return True


class UserErrorFilter(logging.Filter):
    """Drops Prefect's records of a task or flow run that failed with a `UserError`, unless shown.

    The engines log the exception (with its traceback) first, then "Finished in state
    Failed(...)" without one: the run's id, remembered from the first, drops the second.
    A flow fails with the same exception as the task or subflow that failed in it.
    """

    def __init__(self, show: bool):
        super().__init__()
        self.show, self.failed_runs = show, set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.show or not record.name.startswith("prefect"):
            return True
        run_id = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            self.failed_runs.add(run_id)
            return False
        return not (run_id is not None and run_id in self.failed_runs and record.getMessage().startswith("Finished in state"))


def setup_logging(verbosity: int = NORMAL) -> None:
    """The one logging setup of every command (QUIET: warnings and errors only).

    Installed on the root logger before Prefect is imported: Prefect's own setup then
    sees a user handler and leaves the root alone, while its run loggers keep their
    API handler and propagate here.
    """
    _state["verbosity"] = verbosity
    handler = ConsoleHandler(logging.DEBUG if verbosity >= VERBOSE else logging.INFO if verbosity == NORMAL
                             else logging.WARNING)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(RunChatterFilter(show=verbosity >= VERBOSE))
    handler.addFilter(UserErrorFilter(show=verbosity >= VERBOSE))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # other libraries: warnings only, as Prefect's default
    logging.getLogger("grpo_flows").setLevel(logging.DEBUG if verbosity >= VERBOSE else logging.INFO)
    logging.getLogger("prefect").setLevel(logging.INFO)  # as Prefect's own setup, should it come later or not at all
    # math_verify warns once per process that its signal-based timeout is off; the rewards
    # turn it off on purpose (they run in worker threads, where signals cannot reach).
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.captureWarnings(True)  # Python warnings in the same format, not bare on stderr


def live_view_allowed() -> bool:
    """A live view only on an interactive terminal and without --quiet."""
    return _state["verbosity"] >= NORMAL and sys.stderr.isatty()


@contextmanager
def run_logs_to_prefect():
    """While a flow runs, send this project's log records (step lines, cache warnings) to
    the Prefect API as well, so they show in the UI next to Prefect's own."""
    from prefect.logging.handlers import APILogHandler

    handler, logger = APILogHandler(), logging.getLogger("grpo_flows")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class LiveView:
    """The training view at the bottom of a terminal: step k/N, elapsed, ETA, and the last
    step's reward, correctness, loss, tokens/s and phase times."""

    def __init__(self, total_steps: int, done_steps: int = 0):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.metrics = "waiting for the first step"
        view = self

        class _Progress(Progress):
            def get_renderables(self):
                yield self.make_tasks_table(self.tasks)
                yield view.metrics

        self.progress = _Progress(
            TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("elapsed"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(file=sys.stderr), redirect_stdout=True, redirect_stderr=True,
            # rich averages the speed over the last 30 s by default: no ETA at all when a
            # step takes longer. Ten minutes spans many steps and still follows a change.
            speed_estimate_period=600,
        )
        self.task = self.progress.add_task("training", total=total_steps, completed=done_steps)
        self.progress.start()

    def step_done(self, record: dict) -> None:
        self.metrics = step_summary(record)
        self.progress.advance(self.task)

    def stop(self) -> None:
        self.progress.stop()


PHASES = ("rollout", "reward", "advantage", "update", "eval")
CORE_COLUMNS = ("step", "reward_mean", "reward_gsm8k_correct_mean", "pass@k", "loss", "kl", "grad_norm",
                "completion_length_mean", "step_seconds", "cached")


def step_line(record: dict) -> str:
    """The `step=N name=value ...` line of one step (the smoke monitor counts these)."""
    parts = [f"step={record['step']}"]
    for name in CORE_COLUMNS[1:]:
        value = record.get(name)
        if isinstance(value, bool):
            parts.append(f"{name}={str(value).lower()}")
        elif value is not None:
            parts.append(f"{name}={value:.4g}")
    return " ".join(parts)


def step_summary(record: dict) -> str:
    """The live view's metrics line from one metrics.jsonl record."""
    parts = [f"step {record['step']}"]
    for name, label in (("reward_mean", "reward"), ("reward_gsm8k_correct_mean", "correct"), ("loss", "loss")):
        if record.get(name) is not None:
            parts.append(f"{label} {record[name]:.3g}")
    if record.get("rollout_tokens_per_s"):
        parts.append(f"{record['rollout_tokens_per_s']:.0f} tok/s")
    phases = [f"{phase} {record[f'time_{phase}']:.1f}s" for phase in PHASES if f"time_{phase}" in record]
    parts.append("cached" if record.get("cached") or not phases else " ".join(phases))
    return " | ".join(parts)
