"""Cloud TPU provider: the google-cloud-tpu `tpu_v2` client (REST transport) plus gcloud argv.

Zones are tried in order; each failure is classified by tpu.errors (stockout, quota 0,
missing reservation -> next zone; a region-scoped quota -> skip that region's other zones;
permission/auth/invalid argument -> stop). Remote commands are `gcloud compute tpus tpu-vm
ssh/scp` argv lists built by pure functions; the remote command string is `shlex.join` of
an argv, so user data is always quoted.
"""
from __future__ import annotations

import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from tpu.errors import NEXT_ZONE, SKIP_REGION, classify_exception, region_of
from tpu.provider import CommandResult, Node, NodeSpec, ProvisionError, Provider

REMOTE_DIR = "grpo-smoke"
Runner = Callable[[list[str], bytes | None, float], CommandResult]


def ssh_argv(name: str, zone: str, project: str, worker: int | str, command: list[str]) -> list[str]:
    """gcloud ssh running `command` (argv) inside ~/grpo-smoke on one worker or all."""
    remote = f"mkdir -p {REMOTE_DIR} && cd {REMOTE_DIR} && {shlex.join(command)}"
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, f"--zone={zone}", f"--project={project}",
            f"--worker={worker}", "--quiet", f"--command={remote}"]


def scp_argv(name: str, zone: str, project: str, worker: int, remote_path: str, local_path: str) -> list[str]:
    """gcloud scp of ~/grpo-smoke/<remote_path> on one worker to local_path."""
    return ["gcloud", "compute", "tpus", "tpu-vm", "scp", f"{name}:{REMOTE_DIR}/{remote_path}", local_path,
            f"--zone={zone}", f"--project={project}", f"--worker={worker}", "--quiet"]


def node_path(project: str, zone: str, name: str = "") -> str:
    parent = f"projects/{project}/locations/{zone}"
    return f"{parent}/nodes/{name}" if name else parent


def node_body(spec: NodeSpec) -> dict:
    """The Node resource sent to create_node (also what --dry-run prints)."""
    return {"acceleratorType": spec.accelerator_type, "runtimeVersion": spec.runtime_version,
            "schedulingConfig": {"spot": spec.spot}, "labels": dict(spec.labels)}


def make_client(api_endpoint: str | None = None, anonymous: bool = False):
    """A tpu_v2.TpuClient on REST; `api_endpoint` + `anonymous` point it at a fake API."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import tpu_v2

    options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
    credentials = AnonymousCredentials() if anonymous else None
    return tpu_v2.TpuClient(transport="rest", client_options=options, credentials=credentials)


def subprocess_runner(argv: list[str], stdin: bytes | None, timeout_s: float) -> CommandResult:
    try:
        done = subprocess.run(argv, input=stdin or b"", capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return CommandResult(0, 124, "", f"timed out after {timeout_s}s")
    return CommandResult(0, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def _to_node(resource, zone: str) -> Node:
    created = resource.create_time.timestamp() if resource.create_time else 0.0
    return Node(resource.name.rsplit("/", 1)[-1], zone, resource.accelerator_type,
                max(1, len(resource.network_endpoints)), resource.state.name, dict(resource.labels), created)


class GcpProvider(Provider):
    kind = "gcp"

    def __init__(self, project: str, client=None, runner: Runner | None = None, poll_s: float = 10.0,
                 operation_timeout_s: float = 1800.0):
        self.project = project
        self.client = client if client is not None else make_client()
        self.runner = runner or subprocess_runner
        self.poll_s = poll_s
        self.operation_timeout_s = operation_timeout_s

    def _create_in(self, spec: NodeSpec, zone: str) -> Node:
        from google.cloud import tpu_v2

        body = node_body(spec)
        node = tpu_v2.Node(accelerator_type=body["acceleratorType"], runtime_version=body["runtimeVersion"],
                           scheduling_config=tpu_v2.SchedulingConfig(spot=spec.spot), labels=body["labels"])
        operation = self.client.create_node(parent=node_path(self.project, zone), node_id=spec.name, node=node)
        return _to_node(operation.result(timeout=self.operation_timeout_s), zone)

    def create(self, spec: NodeSpec) -> Node:
        from google.api_core import exceptions

        attempts, skipped = [], set()
        for zone in spec.zones:
            if region_of(zone) in skipped:
                attempts.append((zone, "skipped_region", f"quota 0 in region {region_of(zone)}"))
                continue
            try:
                return self._create_in(spec, zone)
            except exceptions.GoogleAPIError as exc:
                decision = classify_exception(exc)
            attempts.append((zone, decision.reason, decision.message))
            if decision.action == SKIP_REGION:
                skipped.add(region_of(zone))
            elif decision.action != NEXT_ZONE:
                raise ProvisionError(f"create in {zone} stopped: {decision.reason}: {decision.message}", attempts)
        tried = ", ".join(f"{z} ({r})" for z, r, _ in attempts)
        raise ProvisionError(f"no zone could create {spec.accelerator_type}; tried {tried}", attempts)

    def get(self, name: str, zone: str) -> Node | None:
        from google.api_core import exceptions

        try:
            return _to_node(self.client.get_node(name=node_path(self.project, zone, name)), zone)
        except exceptions.NotFound:
            return None

    def wait_ready(self, node: Node, timeout_s: float) -> Node:
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.get(node.name, node.zone)
            state = current.state if current else "DELETED"
            if state == "READY":
                return current
            if state in ("PREEMPTED", "TERMINATED", "DELETED", "DELETING") or time.monotonic() > deadline:
                raise ProvisionError(f"node {node.name} in {node.zone} is {state}, not READY",
                                     [(node.zone, state.lower(), "waiting for READY")])
            time.sleep(self.poll_s)

    def run(self, node: Node, argv: list[str], *, worker: int | str = 0, stdin: bytes | None = None,
            timeout_s: float = 600) -> list[CommandResult]:
        # One ssh per worker (not --worker=all) so stdin reaches each and results stay apart.
        workers = range(node.workers) if worker == "all" else [int(worker)]

        def one(w: int) -> CommandResult:
            result = self.runner(ssh_argv(node.name, node.zone, self.project, w, argv), stdin, timeout_s)
            return CommandResult(w, result.returncode, result.stdout, result.stderr)

        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            return list(pool.map(one, workers))

    def copy_from(self, node: Node, remote_path: str, local_path: str, *, worker: int = 0) -> None:
        result = self.runner(scp_argv(node.name, node.zone, self.project, worker, remote_path, local_path), None, 600)
        if not result.ok:
            raise FileNotFoundError(f"scp {remote_path} from {node.name}: {result.stderr.strip()[-500:]}")

    def delete(self, name: str, zone: str) -> bool:
        from google.api_core import exceptions

        try:
            self.client.delete_node(name=node_path(self.project, zone, name)).result(timeout=self.operation_timeout_s)
        except exceptions.NotFound:
            return False
        return True

    def list(self, labels: dict[str, str], zones: tuple[str, ...]) -> list[Node]:
        nodes = []
        for zone in zones:
            for resource in self.client.list_nodes(parent=node_path(self.project, zone)):
                if all(resource.labels.get(k) == v for k, v in labels.items()):
                    nodes.append(_to_node(resource, zone))
        return nodes
