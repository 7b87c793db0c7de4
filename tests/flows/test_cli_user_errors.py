"""A user error raised inside a flow: one sentence on the terminal and exit 2.

Prefect logs a failing task or flow run as ERROR records with tracebacks ("Task run failed
with exception", "Encountered exception during execution", "Finished in state Failed").
For a `UserError` they still reach the Prefect API (the UI), and the terminal shows them
only with --verbose. The CLI test triggers the error inside the rollout task: a finished
step whose rollout artifact is gone cannot be sampled again on the params of a later step.
"""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from train_helpers import TINY

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "step 0's rollout artifact is missing"


def _record(message: str, exc: BaseException | None = None, **extra) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, message, None, exc_info)
    record.__dict__.update(extra)
    return record


def _shown(verbose: bool, records: list[logging.LogRecord]) -> list[str]:
    from flows.console import UserErrorFilter

    kept = UserErrorFilter(show=verbose)
    return [r.getMessage() for r in records if kept.filter(r)]


def test_console_keeps_prefect_errors_that_are_not_user_errors():
    assert len(_shown(False, _failure_records(RuntimeError("bug")))) == 4


def test_console_hides_prefect_errors_of_a_user_error_unless_verbose():
    from grpo_core.errors import UserError

    class Subclass(UserError):
        pass

    for exc in (UserError("bad value"), Subclass("bad value")):
        records = _failure_records(exc)
        assert _shown(False, records) == ["Finished in state Failed('other')"]
        assert len(_shown(True, records)) == 4


def _failure_records(exc: BaseException) -> list[logging.LogRecord]:
    """What Prefect logs when a task fails inside a flow, and an unrelated run's failure."""
    try:
        raise exc
    except BaseException as caught:
        exc = caught
    return [_record(f"Task run failed with exception: {exc!r}", exc, task_run_id="t1", flow_run_id="f1"),
            _record("Finished in state Failed('Task run encountered an exception')", task_run_id="t1", flow_run_id="f1"),
            _record(f"Encountered exception during execution: {exc!r}", exc, flow_run_id="f1"),
            _record("Finished in state Failed('other')", flow_run_id="f2")]


def _train(tmp: Path, run_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    config = tmp / "tiny.yaml"
    config.write_text("# tiny test config\n" + yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 1}}))
    env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("PREFECT_API_URL", None)
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", str(config), "--run-dir", str(run_dir), *flags]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 1-step run without its summary and step 0's rollout artifact."""
    tmp = tmp_path_factory.mktemp("user-errors")
    done = _train(tmp, tmp / "run")
    assert done.returncode == 0, done.stdout + done.stderr
    rollouts = [p for p in (tmp / "run").rglob("*.parquet") if "rollout" in p.name]
    assert rollouts, sorted(map(str, (tmp / "run").rglob("*")))
    for path in [tmp / "run" / "summary.json", *rollouts]:
        path.unlink()
    return tmp, tmp / "run"


@pytest.mark.slow
def test_user_error_inside_a_task_prints_one_sentence_and_exits_2(broken_run):
    done = _train(*broken_run)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output and "| ERROR" not in output, output
    said = [line for line in output.splitlines() if SENTENCE in line]
    assert len(said) == 1 and said[0].startswith(f"error: {SENTENCE}"), output


@pytest.mark.slow
def test_verbose_shows_prefect_tracebacks_of_a_user_error(broken_run):
    done = _train(*broken_run, "--verbose")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" in output and "| ERROR   | prefect.task_runs - Task run failed" in output, output
    assert f"error: {SENTENCE}" in output
