"""The embedded Prefect server of `grpo train`, which never outlives the command.

Prefect's own embedded server is a uvicorn subprocess stopped at interpreter exit: a
`grpo train` killed with SIGKILL (kill -9, the OOM killer, a preempted VM's agent)
leaves it running for good. Here the same server runs under a guard: a thread in the
server process that shuts it down as soon as the process that started it is gone (the
server is re-parented, so `getppid()` changes). Polling works the same on Linux and
macOS, unlike a parent-death signal. The server gets its own session, so Ctrl-C in the
terminal reaches only the CLI, which then stops the server after the flow has reported.

Usage reporting is off unless the user opts in: a server the user never started does not
report usage, and Prefect's client prints its "collects anonymous usage data" notice on
import in a terminal. `quiet_analytics` applies that rule to the `grpo` process (before
Prefect is imported) and to the server's environment; PREFECT_SERVER_ANALYTICS_ENABLED=true
in the user's environment turns reporting on (and leaves the rest to Prefect).

Run as `python -m flows.local_server PARENT_PID UVICORN_ARGS...` by `GuardedServer`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import MutableMapping
from contextlib import contextmanager

_POLL_SECONDS = 0.5
_GRACE_SECONDS = 10.0


ANALYTICS = "PREFECT_SERVER_ANALYTICS_ENABLED"


def quiet_analytics(environ: MutableMapping[str, str]) -> None:
    """No usage reporting and no telemetry notice unless `environ` sets ANALYTICS to true.

    Prefect's client shows its notice and sends SDK events unless DO_NOT_TRACK is set (the
    server setting alone does not stop the notice), so both are set; values the user chose
    stay as they are.
    """
    if environ.get(ANALYTICS, "").strip().lower() in ("1", "true", "yes", "on"):
        return
    environ.setdefault(ANALYTICS, "false")
    environ.setdefault("DO_NOT_TRACK", "1")


def _stop_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown closes the database
    time.sleep(_GRACE_SECONDS)
    os._exit(1)


def uvicorn_argv(port: int) -> list[str]:
    """The uvicorn arguments Prefect's own embedded server runs with (no UI, errors only)."""
    import prefect

    return ["--app-dir", str(prefect.__module_path__.parent), "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]


def _server_class():
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class GuardedServer(SubprocessASGIServer):
        """Prefect's SubprocessASGIServer (port choice, health wait, stop), guarded."""

        def _run_uvicorn_command(self) -> subprocess.Popen:
            env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1", **get_current_settings().to_environment_variables(exclude_unset=True)}
            quiet_analytics(env)
            argv = [sys.executable, "-m", __name__, str(os.getpid()), *uvicorn_argv(self.port)]
            return subprocess.Popen(argv, env=env, start_new_session=True)

    return GuardedServer


@contextmanager
def embedded_server():
    """A guarded local Prefect server for the duration, unless PREFECT_API_URL names one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield None
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    server = _server_class()()
    server.start()
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield server
            finally:  # the run's last log lines and state events, while the server still listens
                APILogWorker.drain_all(timeout=10)
                EventsWorker.drain_all(timeout=10)
    finally:
        server.stop()


def main(argv: list[str]) -> None:
    import runpy

    threading.Thread(target=_stop_when_orphaned, args=(int(argv[0]),), daemon=True).start()
    sys.argv = ["uvicorn", *argv[1:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
