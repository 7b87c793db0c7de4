"""The terminal: one log format, Prefect's run chatter at DEBUG, quiet/verbose, `grpo status`."""
import io
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from flows.cli.main import build_parser
from flows.console import NORMAL, QUIET, VERBOSE, setup_logging, step_line, step_summary
from tasks.run_dir import RunLock
from train_helpers import TINY

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (DEBUG|INFO|WARNING|ERROR) +\| [\w.]+ - \S")


@pytest.fixture
def terminal(monkeypatch):
    """Logging set up as a command would, onto a captured stderr; restored afterwards."""
    root, saved = logging.getLogger(), (logging.getLogger().handlers[:], logging.getLogger().level)
    stream = io.StringIO()

    def setup(verbosity):  # within the test: pytest swaps its own stderr in after fixture setup
        monkeypatch.setattr(sys, "stderr", stream)
        setup_logging(verbosity)
        return stream

    yield setup
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("grpo_flows").setLevel(logging.NOTSET)
    logging.captureWarnings(False)


def emit_samples():
    # Outside a flow run, Prefect's API handler warns about each of its records (as a Python
    # warning: a multi-line record once captured); what is tested here is the terminal's lines.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Logger .* attempted to send logs to the API")
        _emit_samples()


def _emit_samples():
    logging.getLogger("prefect.task_runs").info("Finished in state Completed()")
    logging.getLogger("prefect.flow_runs").info("Beginning subflow run 'step-1'")
    logging.getLogger("grpo_flows.train").info("step=0 reward_mean=0.5")
    logging.getLogger("grpo_flows.cache").debug("a debug note")
    logging.getLogger("prefect.task_runs").warning("a task warning")
    logging.getLogger("some.library").info("library info")
    logging.getLogger("EventsWorker").warning("Still processing items: 1 items remaining...")


def test_default_shows_step_lines_and_warnings_not_run_chatter(terminal):
    stream = terminal(NORMAL)
    emit_samples()
    lines = stream.getvalue().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert [line.split(" - ", 1)[1] for line in lines] == ["step=0 reward_mean=0.5", "a task warning"]
    assert "| INFO    | grpo_flows.train - step=0" in lines[0]


def test_verbose_adds_chatter_and_debug_quiet_keeps_warnings_only(terminal):
    stream = terminal(VERBOSE)
    emit_samples()
    shown = [line.split(" - ", 1)[1] for line in stream.getvalue().splitlines()]
    assert shown == ["Finished in state Completed()", "Beginning subflow run 'step-1'", "step=0 reward_mean=0.5",
                     "a debug note", "a task warning", "Still processing items: 1 items remaining..."]
    stream.seek(0)
    stream.truncate()
    setup_logging(QUIET)
    emit_samples()
    assert [line.split(" - ", 1)[1] for line in stream.getvalue().splitlines()] == ["a task warning"]


def test_python_warnings_come_out_in_the_same_format(terminal):
    import warnings

    stream = terminal(NORMAL)
    warnings.warn("something odd", UserWarning)
    first = stream.getvalue().splitlines()[0]
    assert LINE.match(first) and "WARNING" in first and "something odd" in first


def test_step_line_and_live_view_summary():
    record = {"step": 3, "reward_mean": 0.5, "reward_gsm8k_correct_mean": 0.25, "loss": -0.0123456, "cached": False,
              "rollout_tokens_per_s": 123.4, "time_update": 6.9, "time_rollout": 3.51}
    assert step_line(record) == "step=3 reward_mean=0.5 reward_gsm8k_correct_mean=0.25 loss=-0.01235 cached=false"
    assert step_summary(record) == "step 3 | reward 0.5 | correct 0.25 | loss -0.0123 | 123 tok/s | rollout 3.5s update 6.9s"
    assert step_summary({**record, "cached": True}).endswith("| 123 tok/s | cached")  # a replayed step


@pytest.mark.parametrize("argv", [["train", "--config", "c.yaml", "--quiet"], ["models", "pull", "smollm2-135m-instruct", "-q"],
                                  ["status", "runs/x", "--verbose"], ["print-config", "--config", "c.yaml"]])
def test_every_command_takes_quiet_and_verbose(argv):
    args = build_parser().parse_args(argv)
    expected = {"--quiet": QUIET, "-q": QUIET, "--verbose": VERBOSE}.get(argv[-1], NORMAL)
    assert args.verbosity == expected


def make_run_dir(path: Path, steps_done: int) -> Path:
    """A run directory as `grpo train` leaves it (the files `grpo status` reads)."""
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 4}}))
    records = [{"step": k, "reward_mean": 0.25 * k, "loss": 0.1, "cached": False} for k in range(steps_done)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for step in (1, 2):
        (path / "checkpoints" / str(step)).mkdir(parents=True)
        (path / "checkpoints" / str(step) / "state.bin").write_bytes(b"x" * 1000)
    (path / "checkpoints" / "3.orbax-checkpoint-tmp-1").mkdir()  # an unfinished save is not a checkpoint
    for step in range(steps_done):
        folder = path / "steps" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "rollout.parquet").write_bytes(b"p" * 1500)
    return path


def grpo(*argv):
    return subprocess.run([sys.executable, "-m", "flows.cli.main", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_status_of_a_run(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", steps_done=2)
    result = grpo("status", str(run_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "steps done: 2 of 4"
    assert lines[2] == "last step: step=1 reward_mean=0.25 loss=0.1 cached=false"
    assert lines[3] == "training now: no"
    assert lines[4] == "checkpoints: 1, 2 (2.0 KB)"
    assert lines[5] == "artifacts: 2 files, 3.0 KB in steps/"


def test_status_names_the_process_training_the_run(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", steps_done=1)
    lock = RunLock(run_dir)
    try:
        result = grpo("status", str(run_dir))
    finally:
        lock.release()
    assert f"training now: yes, pid {os.getpid()} (holds the run lock)" in result.stdout


def test_status_of_a_folder_that_is_not_a_run(tmp_path):
    for folder in (tmp_path, tmp_path / "missing"):
        result = grpo("status", str(folder))
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert str(folder) in result.stderr and "grpo train" in result.stderr


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_live_view_keeps_log_lines_off_its_own_lines(terminal, monkeypatch):
    from flows.console import LiveView

    stream = FakeTerminal()
    terminal(NORMAL)
    monkeypatch.setattr(sys, "stderr", stream)
    view = LiveView(total_steps=2)
    for step in range(2):
        logging.getLogger("grpo_flows.train").info("step=%d reward_mean=0.5", step)
        view.step_done({"step": step, "reward_mean": 0.5, "loss": 0.1, "time_rollout": 1.0})
    view.stop()
    raw = stream.getvalue()
    assert "\x1b[" in raw  # drawn as a live terminal view
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line).split("\r")[-1] for line in raw.split("\n")]
    logged = [line for line in lines if "reward_mean=" in line]
    assert len(logged) == 2 and all(LINE.match(line) for line in logged), logged
    assert any(line.startswith("step 2/2") and "elapsed" in line and "ETA" in line for line in lines), lines
    assert "step 1 | reward 0.5 | loss 0.1 | rollout 1.0s" in lines
