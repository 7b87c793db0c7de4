"""Slow tier: a real `prefect server`, a process worker, the deployments from
deployments/prefect.yaml, and `prefect deployment run tpu-smoke/smoke-v6e8 -p provider=local`.

The stack runs from a clean clone of HEAD (the smoke flow refuses a dirty tree). The
training job is the stand-in tests/tpu/fake_job.py (same arguments, outputs and fault
injection as `grpo train`) for the fault and cancellation runs, so they take seconds; one run
trains for real: `grpo train` with configs/smoke_v6e8.yaml as shipped (SmolLM2) on 8 host devices.
"""
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from smoke_helpers import ROOT, SECRET, describe_process, grep_tree, stop_group  # noqa: E402
from tpu.spec import node_name

pytestmark = pytest.mark.slow
PREFECT = [sys.executable, "-m", "prefect"]
# How long a process of the stack may take to exit on SIGTERM: generous, since a worker with
# no run in flight has nothing to wait for.
STOP_S = 30
STAND_IN = ['job_command=["repo/tests/tpu/fake_job.py"]', "preflight=false",
            'timeouts={"ready_s": 60, "command_s": 300, "job_s": 300, "poll_s": 0.5}']


# Exec argv[1:] with SIGINT at its default disposition (not a preexec_fn: forking a
# multithreaded test process to run Python in the child can deadlock).
RESTORE_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    def __init__(self, root: Path):
        self.root, self.repo, self.vms, self.results = root, root / "repo", root / "vms", root / "results"
        self.api = f"http://127.0.0.1:{free_port()}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(root / "home"), "PREFECT_API_URL": self.api,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GRPO_LOCAL_TPU_ROOT": str(self.vms),
                    "WANDB_API_KEY": SECRET, "PREFECT_LOGGING_LEVEL": "INFO"}
        self.procs, self.stop_seconds = [], {}

    def start(self, name: str, argv: list[str]) -> None:
        """Start a service as a service manager does: its own session, default signal
        handling. A process started in the background of a shell without job control (a CI
        job, `cmd &` in a script) inherits SIGINT ignored, and a Prefect worker turns SIGTERM
        into SIGINT: it would then outlive SIGTERM (docs/troubleshooting.md)."""
        log = open(self.root / f"{name}.log", "w")
        argv = [sys.executable, "-c", RESTORE_SIGINT, *argv]  # the recipe docs/troubleshooting.md gives
        self.procs.append((name, subprocess.Popen(argv, cwd=self.repo, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True)))

    def cli(self, *args: str) -> str:
        done = subprocess.run([*PREFECT, *args], cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def get(self, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api + path, data=data, method="POST" if data else "GET",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait_healthy(self) -> None:
        for _ in range(240):
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError((self.root / "server.log").read_text()[-3000:])

    def run(self, *params: str) -> str:
        out = self.cli("deployment", "run", "tpu-smoke/smoke-v6e8", "-p", "provider=local",
                       "-p", f"results_dir={self.results}", *[a for p in params for a in ("-p", p)])
        return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)

    def wait(self, run_id: str, timeout_s: float = 600) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            flow_run = self.get(f"/flow_runs/{run_id}")
            if flow_run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return flow_run
            time.sleep(1)
        raise AssertionError(f"run {run_id} not finished; worker log:\n{(self.root / 'worker.log').read_text()[-4000:]}")

    def run_results(self, run_id: str) -> Path:
        """Where the smoke run fetched its files: results_dir/<node name of the flow run>.
        The module's tests share results_dir, so each reads its own run's folder."""
        return self.results / node_name(run_id)

    def artifact(self, run_id: str) -> str:
        found = self.get("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["tpu-smoke-v6e-8"]}}})
        return found[0]["data"]

    def stop(self) -> dict[str, str]:
        """SIGTERM the worker, then the server, as a service manager stops them. What kept a
        process past STOP_S, by name (it is then killed: the stack goes either way)."""
        stuck = {}
        for name, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            self.stop_seconds[name] = stop_group(proc, STOP_S)
            if self.stop_seconds[name] is None:
                stuck[name] = describe_process(proc.pid) + (self.root / f"{name}.log").read_text()[-3000:]
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        return stuck


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("smoke-e2e"))
    subprocess.run(["git", "clone", "-q", str(ROOT), str(stack.repo)], check=True)
    stack.start("server", [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", stack.api.split(":")[2][:-4]])
    try:
        stack.wait_healthy()
        stack.cli("work-pool", "create", "grpo-process", "--type", "process")
        stack.cli("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        stack.start("worker", [*PREFECT, "worker", "start", "--pool", "grpo-process", "--limit", "2"])
        yield stack
    finally:
        stack.stop()  # cleanup; the last test asserts that the stack stops on SIGTERM


def test_smoke_deployment_completes_and_deletes_the_vm(stack):
    run_id = stack.run(*STAND_IN, 'job_env={"FAKE_JOB_STEP_S": "0.2"}')
    flow_run = stack.wait(run_id)
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    report = stack.artifact(run_id)
    for stage in ("check commit", "provision", "bootstrap", "sync", "install", "secrets", "launch", "monitor", "fetch", "delete"):
        assert f"| {stage} | " in report
    assert "3 steps, exit code 0" in report and "| delete | ok |" in report
    assert list(stack.vms.iterdir()) == []
    logs = list(stack.run_results(run_id).rglob("train.log"))
    assert logs and "wandb_key=present" in logs[0].read_text()


def test_smoke_deployment_accepts_queued_provisioning(stack):
    """`-p tpu='{"provisioning": "queued", ...}'` passes the deployment's parameter schema; the
    local provider has no queue, so it provisions directly, and the report says what was asked."""
    run_id = stack.run(*STAND_IN, 'job_env={"FAKE_JOB_STEP_S": "0.1"}',
                       'tpu={"provisioning": "queued", "queue_wait_s": 600, "create_timeout_s": 300}')
    flow_run = stack.wait(run_id)
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    report = stack.artifact(run_id)
    assert "**provisioning**: queued, up to 600 s per zone" in report and "| local | created |" in report
    assert list(stack.vms.iterdir()) == []


@pytest.mark.timeout(3000)
def test_smoke_deployment_with_real_grpo_train(stack):
    """configs/smoke_v6e8.yaml as shipped (the real SmolLM2, 3 steps) on 8 host CPU devices,
    like the 8 chips of the v6e-8 it is made for. The job starts its own temporary Prefect
    server, slow on a busy 2-core machine."""
    job_env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    run_id = stack.run(f"job_env={json.dumps(job_env)}", 'timeouts={"job_s": 2400, "poll_s": 2}')
    flow_run = stack.wait(run_id, timeout_s=2700)
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    report = stack.artifact(run_id)
    assert "3 steps, exit code 0" in report and "| preflight | ok |" in report and "| delete | ok |" in report
    if importlib.util.find_spec("libtpu") is not None:  # the worker compiled the run for v6e-8 before renting
        assert "## XLA's memory per device" in report and "update" in report.split("## XLA's memory")[1]
    metrics = list(stack.run_results(run_id).rglob("metrics.jsonl"))
    assert len(metrics) == 1, metrics
    rows = [json.loads(line) for line in metrics[0].read_text().splitlines()]
    assert len({row["step"] for row in rows}) == 3  # grpo train counts steps from 0
    assert list(stack.vms.iterdir()) == []


@pytest.mark.parametrize("fault, reason, needle", [("raise", "traceback", "Traceback (most recent call last)"),
                                                    ("oom", "oom", "RESOURCE_EXHAUSTED: Error allocating device buffer")])
def test_faulty_job_fails_classified_and_deletes_the_vm(stack, fault, reason, needle):
    run_id = stack.run(*STAND_IN, json.dumps({"FAKE_JOB_STEP_S": "0.1", "GRPO_FAULT_INJECT": f"update:2:{fault}"}).join(["job_env=", ""]))
    flow_run = stack.wait(run_id)
    assert flow_run["state"]["type"] == "FAILED"
    assert f"smoke failed: {reason}" in flow_run["state"]["message"] and needle in flow_run["state"]["message"]
    assert needle in stack.artifact(run_id) and "| delete | ok |" in stack.artifact(run_id)
    assert list(stack.vms.iterdir()) == []


def test_cancelling_a_running_smoke_deletes_the_vm(stack):
    run_id = stack.run(*STAND_IN, 'job_env={"FAKE_JOB_STEP_S": "2"}', 'overrides=["train.steps=300"]')
    deadline = time.monotonic() + 300
    while not list(stack.vms.glob("*/worker-0/run/pid")):
        assert time.monotonic() < deadline, (stack.root / "worker.log").read_text()[-4000:]
        time.sleep(0.5)
    pid = int(next(stack.vms.glob("*/worker-0/run/pid")).read_text())
    stack.cli("flow-run", "cancel", run_id)
    assert stack.wait(run_id)["state"]["type"] == "CANCELLED"
    for _ in range(120):
        if not list(stack.vms.iterdir()):
            break
        time.sleep(0.5)
    assert list(stack.vms.iterdir()) == []
    assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()


def test_planted_wandb_key_is_nowhere(stack):
    """Runs after every smoke run of this module: greps the server database, logs, results and run files."""
    logs = stack.get("/logs/filter", {"limit": 200})
    assert logs and all(SECRET not in entry["message"] for entry in logs)
    runs = stack.get("/flow_runs/filter", {"limit": 50})
    assert runs and SECRET not in json.dumps(runs)
    assert SECRET not in json.dumps(stack.get("/artifacts/filter", {"limit": 50}))
    assert grep_tree(stack.root / "home", SECRET) == []
    assert grep_tree(stack.results, SECRET) == [] and grep_tree(stack.repo, SECRET) == []
    for name in ("server.log", "worker.log"):
        assert SECRET not in (stack.root / name).read_text()


def test_worker_and_server_stop_on_sigterm(stack):
    """Runs last: after the runs above, SIGTERM stops the worker and then the server, each
    within STOP_S; no run is in flight, so nothing is left to drain."""
    stuck = stack.stop()
    print("seconds to exit on SIGTERM:", stack.stop_seconds)
    assert not stuck, "\n\n".join(f"{name} outlived SIGTERM by {STOP_S} s:\n{why}" for name, why in stuck.items())
