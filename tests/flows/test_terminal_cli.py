"""`grpo train` as a user runs it (slow tier): output redirected to a file, a rerun of a
finished run, and kill -9 leaving no Prefect server behind."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from train_helpers import TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (INFO|WARNING|ERROR) +\| [\w.]+ - \S")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


def start(tmp_path: Path, run_dir: Path, log_path: Path) -> subprocess.Popen:
    """`grpo train` on the tiny config, stdout and stderr into a file, in its own session."""
    config = tmp_path / "tiny.yaml"
    config.write_text("# tiny test config\n" + yaml.safe_dump(TINY))
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")
    env.pop("PREFECT_API_URL", None)
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", str(config), "--run-dir", str(run_dir)]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def train(tmp_path: Path, run_dir: Path, name: str) -> tuple[int, str]:
    log_path = tmp_path / f"{name}.log"
    proc = start(tmp_path, run_dir, log_path)
    return proc.wait(timeout=1800), log_path.read_text()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("terminal")
    code, text = train(tmp, tmp / "run", "first")
    assert code == 0, text[-3000:]
    return tmp, text


def test_file_output_is_step_lines_without_control_characters(finished):
    _, text = finished
    assert not CONTROL.search(text), repr(CONTROL.search(text))
    lines = text.splitlines()
    assert lines[-1].startswith("done: 2 steps in ") and "params sha256" in lines[-1]
    bad = [line for line in lines[:-1] if not LINE.match(line)]
    assert not bad, bad
    steps = [line for line in lines if "step=" in line]
    assert [re.search(r"grpo_flows\.train - step=(\d+) ", line).group(1) for line in steps] == ["0", "1"]
    for chatter in ("Finished in state", "Beginning", "View at", "Starting temporary server", "Created task run"):
        assert chatter not in text
    info = [line for line in lines[:-1] if "| INFO " in line and line not in steps]
    assert not info, info  # besides the step lines only warnings (none expected, none required)


def test_rerun_of_a_finished_run_says_nothing_to_do(finished):
    tmp, _ = finished
    code, text = train(tmp, tmp / "run", "rerun")
    assert code == 0, text[-3000:]
    assert "grpo_flows.train - nothing to do: 2 steps already trained" in text
    assert "step=" not in text and text.splitlines()[-1].startswith("done: 2 steps in ")


def _guarded_servers_of(pid: int) -> list[int]:
    """Pids of `python -m flows.local_server <pid> ...` processes (the guarded Prefect server)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"flows.local_server" in argv and str(pid).encode() in argv:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_kill_minus_9_leaves_no_prefect_server(tmp_path):
    proc = start(tmp_path, tmp_path / "run", tmp_path / "killed.log")
    servers: list[int] = []
    try:
        deadline = time.monotonic() + 900
        while not servers:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
            servers = _guarded_servers_of(proc.pid)
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60
        while any(map(_alive, servers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, servers)), f"Prefect server {servers} outlived its killed `grpo train`"
    finally:
        for pid in [proc.pid, *servers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
