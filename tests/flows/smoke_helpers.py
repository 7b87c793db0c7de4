"""Shared pieces of the smoke-flow tests: a throwaway git repo holding the stand-in job, a
stand-in for gcloud ssh/scp, and stopping a process group the way a service manager does."""
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tpu.provider import CommandResult

ROOT = Path(__file__).resolve().parents[2]
FAKE_JOB = ("repo/tests/tpu/fake_job.py",)
# Made at import time so the value itself appears in no file of the repository.
SECRET = "wandb-planted-" + uuid.uuid4().hex


def git(repo: Path, *args: str) -> str:
    argv = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def make_repo(path: Path, with_origin: bool = False) -> str:
    (path / "tests" / "tpu").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "tpu" / "fake_job.py", path / "tests" / "tpu" / "fake_job.py")
    (path / "cfg.yaml").write_text("train:\n  steps: 3\n")
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    git(path, "add", ".")
    git(path, "commit", "-qm", "x")
    if with_origin:
        subprocess.run(["git", "init", "-q", "--bare", str(path.parent / "origin.git")], check=True)
        git(path, "remote", "add", "origin", str(path.parent / "origin.git"))
        git(path, "push", "-q", "origin", "HEAD:refs/heads/main")
        git(path, "fetch", "-q", "origin")
    return git(path, "rev-parse", "HEAD")


def grep_tree(root: Path, needle: str) -> list[str]:
    """Files under root whose bytes contain needle."""
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


class FakeSsh:
    """Records every gcloud argv (and whether stdin was sent); answers the monitor as 'running',
    or with `steps` as a job that finished them with exit code 0. scp finds no files."""

    def __init__(self, steps: int | None = None):
        self.calls, self.steps = [], steps

    def __call__(self, argv, stdin, timeout_s):
        self.calls.append((argv, stdin))
        if argv[4] == "scp":
            return CommandResult(0, 1, "", "no such file")
        if "os.kill" in argv[-1]:
            status = {"launched": True, "alive": True, "exit_code": None, "last_step": 1}
            if self.steps is not None:
                status.update(alive=False, exit_code=0, last_step=self.steps, steps_done=self.steps)
            return CommandResult(0, 0, json.dumps(status))
        return CommandResult(0, 0, "", "")


def stop_group(proc: subprocess.Popen, timeout_s: float) -> float | None:
    """SIGTERM the process group led by `proc` (a service manager's stop); the seconds until
    `proc` exited, or None when it outlived `timeout_s` (it is left running)."""
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started


def describe_process(pid: int) -> str:
    """What keeps a process alive: its descendants and each process's threads (with py-spy,
    when installed, the Python stack of each thread)."""
    tree = subprocess.run(["ps", "-o", "pid,ppid,pgid,sid,stat,etime,args", "--forest", "--ppid", str(pid), "-p", str(pid)],
                          capture_output=True, text=True).stdout
    threads = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            threads.append(f"{task.name} {(task / 'comm').read_text().strip()} {(task / 'wchan').read_text().strip()}")
        except OSError:
            continue
    stacks = ""
    if shutil.which("py-spy"):
        stacks = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout
    return f"{tree}\nthreads (tid comm wchan):\n" + "\n".join(threads) + f"\n{stacks}"
