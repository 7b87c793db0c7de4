"""The local provider runs the real remote commands: venv, clone, secret file, launch, monitor."""
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from tpu import scripts
from tpu.local import LocalProvider
from tpu.provider import NodeSpec

HERE = Path(__file__).resolve().parent


def make_repo(path: Path) -> str:
    (path / "tests" / "tpu").mkdir(parents=True)
    shutil.copy(HERE / "fake_job.py", path / "tests" / "tpu" / "fake_job.py")
    (path / "cfg.yaml").write_text("train: {steps: 2}\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def run_ok(provider, node, argv, **kw):
    results = provider.run(node, argv, worker="all", **kw)
    assert all(r.ok for r in results), results
    return results


def wait_done(provider, node, worker=0, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s  # generous: a loaded CI machine starts Python slowly
    while time.monotonic() < deadline:
        status = scripts.parse_monitor(provider.run(node, scripts.monitor_command(), worker=worker)[0].stdout)
        if status["exit_code"] is not None or (status["launched"] and not status["alive"]):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job did not finish within {timeout_s:.0f}s")


def gone(pid: int) -> bool:
    """The process has exited (absent, or a zombie awaiting its parent)."""
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return True


def test_local_vm_full_cycle(tmp_path):
    sha = make_repo(tmp_path / "src")
    provider = LocalProvider(tmp_path / "vms", workers=2)
    made = provider.create(NodeSpec("vm-1", labels={"grpo-flows": "smoke"}))
    node = made.node
    assert [(a.zone, a.outcome) for a in made.attempts] == [("local", "created")]
    assert provider.wait_ready(node, 1).state == "READY"
    for argv in scripts.bootstrap_commands("local", sys.executable) + scripts.sync_commands(str(tmp_path / "src"), sha):
        results = run_ok(provider, node, argv)
    assert results[1].stdout.strip() == sha
    run_ok(provider, node, scripts.install_commands("local")[0])
    run_ok(provider, node, scripts.write_secret_command(), stdin=b"sekret")
    secret = provider.worker_dir(node, 1) / scripts.SECRET_FILE
    assert secret.read_text() == "sekret" and stat.S_IMODE(secret.stat().st_mode) == 0o600
    train = scripts.train_command("cfg.yaml", ["train.steps=2"], ("repo/tests/tpu/fake_job.py",), {"FAKE_JOB_STEP_S": "0"})
    run_ok(provider, node, scripts.launch_command(train))
    for worker in (0, 1):  # each worker runs its own job; read a log only once its job ended
        status = wait_done(provider, node, worker=worker)
        assert status["exit_code"] == 0 and status["last_step"] == 2
        provider.copy_from(node, scripts.LOG_FILE, str(tmp_path / "out" / f"train{worker}.log"), worker=worker)
        assert "wandb_key=present" in (tmp_path / "out" / f"train{worker}.log").read_text()
    assert [n.name for n in provider.list({"grpo-flows": "smoke"})] == ["vm-1"]
    assert provider.delete("vm-1") and not (tmp_path / "vms" / "vm-1").exists() and not provider.delete("vm-1")


def test_faults_are_visible_to_the_monitor(tmp_path):
    sha = make_repo(tmp_path / "src")
    provider = LocalProvider(tmp_path / "vms")
    node = provider.create(NodeSpec("vm-2")).node
    for argv in scripts.bootstrap_commands("local", sys.executable) + scripts.sync_commands(str(tmp_path / "src"), sha):
        run_ok(provider, node, argv)
    run_ok(provider, node, scripts.install_commands("local")[0])
    for kind, key in (("oom", "oom_line"), ("raise", "traceback")):
        env = {"FAKE_JOB_STEP_S": "0", "GRPO_FAULT_INJECT": f"update:2:{kind}"}
        train = scripts.train_command("cfg.yaml", [], ("repo/tests/tpu/fake_job.py",), env)
        run_ok(provider, node, scripts.launch_command(train))
        status = wait_done(provider, node)
        assert status["exit_code"] == 1 and status["last_step"] == 1 and status[key]
    env = {"FAKE_JOB_STEP_S": "0", "GRPO_FAULT_INJECT": "rollout:1:kill"}
    run_ok(provider, node, scripts.launch_command(scripts.train_command("cfg.yaml", [], ("repo/tests/tpu/fake_job.py",), env)))
    assert wait_done(provider, node)["exit_code"] == 137
    long_job = scripts.train_command("cfg.yaml", ["train.steps=1000"], ("repo/tests/tpu/fake_job.py",), {"FAKE_JOB_STEP_S": "1"})
    run_ok(provider, node, scripts.launch_command(long_job))
    pid = int((provider.worker_dir(node, 0) / "run" / "pid").read_text())
    assert provider.delete("vm-2")
    deadline = time.monotonic() + 30
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid), "delete left the training job running"
