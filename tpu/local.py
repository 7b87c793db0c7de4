"""The local provider: a "TPU VM" is a fresh directory on this machine.

`root/<name>/node.json` holds the node record, `root/<name>/worker-<i>/` is worker i's smoke
directory, and "ssh" is a subprocess with an argv list and that directory as cwd. The
environment is this process's minus the W&B key and Prefect API, like a fresh VM, so the job only sees the
key through the 0600 file the smoke flow writes over stdin. Deleting kills the job's
process group, then removes the directory.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

from tpu.provider import NODE, CommandResult, Node, NodeSpec, Provider, Provisioned, ProvisionError, ZoneAttempt
from tpu.scripts import kill_command

LOCAL_ZONE = "local"
# A fresh VM has no W&B key and no Prefect API of ours in its environment.
HIDDEN_ENV = ("WANDB_API_KEY", "PREFECT_API_URL", "PREFECT_API_KEY")


def default_root() -> Path:
    """GRPO_LOCAL_TPU_ROOT, else <tmp>/grpo-local-tpu."""
    return Path(os.environ.get("GRPO_LOCAL_TPU_ROOT") or Path(tempfile.gettempdir()) / "grpo-local-tpu")


class LocalProvider(Provider):
    kind = "local"

    def __init__(self, root: str | Path | None = None, workers: int = 1):
        self.root = Path(root) if root else default_root()
        self.workers = workers

    def _node_dir(self, name: str) -> Path:
        return self.root / name

    def worker_dir(self, node: Node, worker: int) -> Path:
        return self._node_dir(node.name) / f"worker-{worker}"

    def _write(self, node: Node) -> Node:
        (self._node_dir(node.name) / "node.json").write_text(json.dumps(asdict(node)))
        return node

    def create(self, spec: NodeSpec) -> Provisioned:
        """One "zone", no queue: provisioning=queued behaves like direct here."""
        node_dir, start = self._node_dir(spec.name), time.monotonic()
        if node_dir.exists():
            raise ProvisionError(f"local node {node_dir} already exists", [ZoneAttempt(LOCAL_ZONE, "exists", str(node_dir))])
        for worker in range(self.workers):
            (node_dir / f"worker-{worker}").mkdir(parents=True)
        node = Node(spec.name, LOCAL_ZONE, spec.accelerator_type, self.workers, "READY", dict(spec.labels), time.time())
        attempt = ZoneAttempt(LOCAL_ZONE, "created", f"{spec.name} (directory)", time.monotonic() - start)
        return Provisioned(self._write(node), (attempt,))

    def get(self, name: str, zone: str = LOCAL_ZONE) -> Node | None:
        path = self._node_dir(name) / "node.json"
        if not path.is_file():
            return None
        return Node(**json.loads(path.read_text()))

    def set_state(self, name: str, state: str) -> None:
        """Test hook: mark the node PREEMPTED (what Cloud TPU does to a spot VM)."""
        self._write(replace(self.get(name), state=state))

    def wait_ready(self, node: Node, timeout_s: float) -> Node:
        current = self.get(node.name)
        if current is None or current.state != "READY":
            raise ProvisionError(f"local node {node.name} is not READY", [ZoneAttempt(LOCAL_ZONE, "not_ready", str(current))])
        return current

    def _run_one(self, node: Node, argv: list[str], worker: int, stdin: bytes | None, timeout_s: float) -> CommandResult:
        env = {k: v for k, v in os.environ.items() if k not in HIDDEN_ENV}
        env["PREFECT_HOME"] = str(self.worker_dir(node, worker) / ".prefect")  # the job's own Prefect state
        try:
            done = subprocess.run(argv, cwd=self.worker_dir(node, worker), input=stdin or b"", capture_output=True,
                                  timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return CommandResult(worker, 124, "", f"timed out after {timeout_s}s")
        return CommandResult(worker, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))

    def run(self, node: Node, argv: list[str], *, worker: int | str = 0, stdin: bytes | None = None,
            timeout_s: float = 600) -> list[CommandResult]:
        workers = range(node.workers) if worker == "all" else [int(worker)]
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            return list(pool.map(lambda w: self._run_one(node, argv, w, stdin, timeout_s), workers))

    def copy_from(self, node: Node, remote_path: str, local_path: str, *, worker: int = 0) -> None:
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.worker_dir(node, worker) / remote_path, local_path)

    def delete(self, name: str, zone: str = LOCAL_ZONE, kind: str = NODE) -> bool:
        node = self.get(name)
        if node is None:
            return False
        self.run(node, kill_command(), worker="all", timeout_s=30)
        shutil.rmtree(self._node_dir(name), ignore_errors=True)
        return True

    def list(self, labels: dict[str, str], zones: tuple[str, ...] = ()) -> list[Node]:
        if not self.root.is_dir():
            return []
        nodes = [self.get(p.name) for p in sorted(self.root.iterdir()) if (p / "node.json").is_file()]
        return [n for n in nodes if n and all(n.labels.get(k) == v for k, v in labels.items())]
