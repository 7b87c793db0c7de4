"""The embedded Prefect server reports no usage, and `grpo train` shows no telemetry notice,
unless the user sets PREFECT_SERVER_ANALYTICS_ENABLED=true.

Prefect prints its notice on import, once per PREFECT_HOME, and only to a terminal, so the
subprocess runs on a pseudo-terminal with a fresh PREFECT_HOME and no CI variables (CI
turns Prefect's telemetry off by itself).
"""
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.local_server import ANALYTICS, quiet_analytics
from train_helpers import TINY

ROOT = Path(__file__).resolve().parents[2]
NOTICE = "Prefect collects anonymous usage data"


@pytest.mark.parametrize("given, expected", [
    ({}, {ANALYTICS: "false", "DO_NOT_TRACK": "1"}),
    ({ANALYTICS: "false"}, {ANALYTICS: "false", "DO_NOT_TRACK": "1"}),
    ({"DO_NOT_TRACK": "0"}, {ANALYTICS: "false", "DO_NOT_TRACK": "0"}),
    ({ANALYTICS: "true"}, {ANALYTICS: "true"}),
    ({ANALYTICS: " True "}, {ANALYTICS: " True "}),
    ({ANALYTICS: "1", "DO_NOT_TRACK": "1"}, {ANALYTICS: "1", "DO_NOT_TRACK": "1"}),
])
def test_reporting_is_off_unless_the_user_turns_it_on(given, expected):
    environ = dict(given)
    quiet_analytics(environ)
    assert environ == expected


def clean_env(tmp_path: Path) -> dict:
    """The user's environment as Prefect sees it on a fresh install: no opt-out, no CI."""
    from prefect._internal.analytics.ci_detection import CI_ENV_VARS

    dropped = {ANALYTICS, "DO_NOT_TRACK", "PREFECT_API_URL", *CI_ENV_VARS}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}


def run_on_terminal(argv: list[str], env: dict, timeout_s: float) -> tuple[int, str]:
    """Run argv with stdin, stdout and stderr on a pseudo-terminal; (exit code, everything it printed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 1.0)[0]:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closes when the process and its children are gone
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode(errors="replace")


def test_the_terminal_harness_sees_prefects_notice(tmp_path):
    """Without the opt-out, importing Prefect on this terminal prints the notice."""
    code, text = run_on_terminal([sys.executable, "-c", "import prefect"], clean_env(tmp_path), 120)
    assert code == 0 and NOTICE in text, text[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_grpo_train_on_a_terminal_shows_no_telemetry_notice(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 1}}))
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", str(config),
            "--run-dir", str(tmp_path / "run")]
    code, text = run_on_terminal(argv, clean_env(tmp_path), 800)
    assert code == 0 and "done: 1 steps in" in text, text[-3000:]
    assert NOTICE not in text and "telemetry" not in text.lower(), text[-3000:]
