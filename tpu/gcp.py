"""Cloud TPU provider: the google-cloud-tpu `tpu_v2` client (REST transport) plus gcloud argv.

Zones are tried in order (tpu.zones), either by creating the node directly or by putting a
queued resource in the zone's queue for up to `queue_wait_s` (Cloud TPU's answer to scarce
v5e/v6e capacity: the request waits instead of failing at once). Each failure is classified
by tpu.errors (stockout, quota 0, missing reservation, expired queue, timeout -> next zone;
a region-scoped quota -> skip that region's other zones; permission/auth/invalid argument
-> stop). Every read, operation poll and delete retries transient API errors (tpu.retry).
Remote commands are `gcloud compute tpus tpu-vm ssh/scp` argv lists built by pure functions;
the remote command string is `shlex.join` of an argv, so user data is always quoted.
"""
from __future__ import annotations

import functools
import json
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from tpu.errors import NEXT_ZONE, Decision, api_message, classify_queue_failure
from tpu.provider import (NODE, QUEUED_RESOURCE, CommandResult, Node, NodeSpec, Provider, Provisioned, ProvisionError,
                          ZoneAttempt)
from tpu.retry import LOGGER, RetryPolicy
from tpu.zones import ZoneFailed, try_zones

REMOTE_DIR = "grpo-smoke"
DELETE_TIMEOUT_S = 900.0
Runner = Callable[[list[str], bytes | None, float], CommandResult]
# A queued resource in one of these will not produce a node for this request.
QUEUE_DEAD_STATES = ("SUSPENDING", "SUSPENDED", "DELETING")


def ssh_argv(name: str, zone: str, project: str, worker: int | str, command: list[str]) -> list[str]:
    """gcloud ssh running `command` (argv) inside ~/grpo-smoke on one worker or all."""
    remote = f"mkdir -p {REMOTE_DIR} && cd {REMOTE_DIR} && {shlex.join(command)}"
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, f"--zone={zone}", f"--project={project}",
            f"--worker={worker}", "--quiet", f"--command={remote}"]


def scp_argv(name: str, zone: str, project: str, worker: int, remote_path: str, local_path: str) -> list[str]:
    """gcloud scp of ~/grpo-smoke/<remote_path> on one worker to local_path."""
    return ["gcloud", "compute", "tpus", "tpu-vm", "scp", f"{name}:{REMOTE_DIR}/{remote_path}", local_path,
            f"--zone={zone}", f"--project={project}", f"--worker={worker}", "--quiet"]


def node_path(project: str, zone: str, name: str = "", kind: str = NODE) -> str:
    """The API path of a zone (no name) or of a node / queued resource in it."""
    parent = f"projects/{project}/locations/{zone}"
    collection = "nodes" if kind == NODE else "queuedResources"
    return f"{parent}/{collection}/{name}" if name else parent


def node_body(spec: NodeSpec) -> dict:
    """The Node resource sent to create_node (also what --dry-run prints)."""
    return {"acceleratorType": spec.accelerator_type, "runtimeVersion": spec.runtime_version,
            "schedulingConfig": {"spot": spec.spot}, "labels": dict(spec.labels)}


def queued_resource_body(spec: NodeSpec, project: str, zone: str) -> dict:
    """The QueuedResource sent to create_queued_resource (also what --dry-run prints).

    Spot is the queued resource's tier, not the node's scheduling config; the labels ride
    on the node spec (a queued resource has none of its own), so list() finds both by them."""
    node = {key: value for key, value in node_body(spec).items() if key != "schedulingConfig"}
    body = {"tpu": {"nodeSpec": [{"parent": node_path(project, zone), "nodeId": spec.name, "node": node}]},
            "queueingPolicy": {"validUntilDuration": f"{int(spec.queue_wait_s)}s"}}
    if spec.spot:
        body["spot"] = {}
    return body


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


@functools.cache
def _no_retry():
    """api_core's operation polls retry a 503 on their own, with real sleeps and no log line;
    this turns that off so tpu.retry is the one policy."""
    from google.api_core.retry import Retry

    return Retry(predicate=lambda exc: False)


def _to_node(resource, zone: str) -> Node:
    created = resource.create_time.timestamp() if resource.create_time else 0.0
    return Node(resource.name.rsplit("/", 1)[-1], zone, resource.accelerator_type,
                max(1, len(resource.network_endpoints)), resource.state.name, dict(resource.labels), created)


def _queued_record(resource, zone: str) -> Node:
    node = resource.tpu.node_spec[0].node if resource.tpu.node_spec else None
    created = resource.create_time.timestamp() if resource.create_time else 0.0
    return Node(resource.name.rsplit("/", 1)[-1], zone, node.accelerator_type if node else "", 1,
                resource.state.state.name, dict(node.labels) if node else {}, created, QUEUED_RESOURCE)


def _has_labels(record: Node, labels: dict[str, str]) -> bool:
    return all(record.labels.get(k) == v for k, v in labels.items())


class GcpProvider(Provider):
    kind = "gcp"

    def __init__(self, project: str, client=None, runner: Runner | None = None, poll_s: float = 10.0,
                 retry: RetryPolicy | None = None, log: Callable[[str], None] = LOGGER.info,
                 clock: Callable[[], float] = time.monotonic):
        self.project = project
        self.client = client if client is not None else make_client()
        self.runner = runner or subprocess_runner
        self.poll_s = poll_s
        self.log = log
        self.retry = retry or RetryPolicy(log=log)
        self.clock = clock

    def _call(self, what: str, fn):
        return self.retry.call(what, fn)

    def _wait(self, operation, what: str, timeout_s: float):
        """The operation's result once done (each poll retried); TimeoutError after timeout_s."""
        deadline = self.clock() + timeout_s
        while not self._call(f"poll {what}", lambda: operation.done(retry=_no_retry())):
            if self.clock() >= deadline:
                raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")
            self.retry.sleep(self.poll_s)
        return operation.result()

    def _create_direct(self, spec: NodeSpec, zone: str) -> Node:
        from google.cloud import tpu_v2

        node = tpu_v2.Node.from_json(json.dumps(node_body(spec)))
        operation = self.client.create_node(parent=node_path(self.project, zone), node_id=spec.name, node=node)
        return _to_node(self._wait(operation, f"create node {spec.name} in {zone}", spec.create_timeout_s), zone)

    def _create_queued(self, spec: NodeSpec, zone: str) -> Node:
        """Queue in `zone`, follow the request until ACTIVE (-> its node) or it fails/expires."""
        from google.cloud import tpu_v2

        what = f"queued resource {spec.name} in {zone}"
        body = tpu_v2.QueuedResource.from_json(json.dumps(queued_resource_body(spec, self.project, zone)))
        operation = self.client.create_queued_resource(parent=node_path(self.project, zone),
                                                       queued_resource_id=spec.name, queued_resource=body)
        self._wait(operation, f"create {what}", spec.create_timeout_s)
        path = node_path(self.project, zone, spec.name, QUEUED_RESOURCE)
        deadline, last = self.clock() + spec.queue_wait_s + spec.create_timeout_s, ""
        while True:
            resource = self._call(f"get {what}", lambda: self.client.get_queued_resource(name=path))
            state = resource.state.state.name
            if state != last:
                self.log(f"{what}: {state}")
                last = state
            if state == "ACTIVE":
                return self._queued_node(spec, zone)
            self._check_queue(resource, state, deadline, spec)
            self.retry.sleep(self.poll_s)

    def _check_queue(self, resource, state: str, deadline: float, spec: NodeSpec) -> None:
        """Raise ZoneFailed when the request failed, died or outlived its wait."""
        if state == "FAILED":
            error = resource.state.failed_data.error
            raise ZoneFailed(classify_queue_failure(error.code or None, error.message))
        if state in QUEUE_DEAD_STATES:
            raise ZoneFailed(Decision(NEXT_ZONE, "queue_failed", f"queued resource went {state}"))
        if self.clock() >= deadline:
            waited = spec.queue_wait_s + spec.create_timeout_s
            reason = "timeout" if state == "PROVISIONING" else "queue_expired"
            raise ZoneFailed(Decision(NEXT_ZONE, reason, f"still {state} after {waited:.0f} s"))

    def _queued_node(self, spec: NodeSpec, zone: str) -> Node:
        node = self.get(spec.name, zone)
        if node is None:
            raise ZoneFailed(Decision(NEXT_ZONE, "queue_failed", f"ACTIVE but node {spec.name} does not exist"))
        return node

    def _clear_zone(self, spec: NodeSpec, zone: str) -> None:
        """Delete whatever a failed attempt may have left: the queued resource, then the node."""
        if spec.provisioning == "queued":
            self.delete(spec.name, zone, QUEUED_RESOURCE)
        if self.get(spec.name, zone) is not None:
            self.delete(spec.name, zone, NODE)

    def create(self, spec: NodeSpec) -> Provisioned:
        attempt = self._create_queued if spec.provisioning == "queued" else self._create_direct
        return try_zones(spec, lambda zone: attempt(spec, zone), lambda zone: self._clear_zone(spec, zone),
                         self.log, self.clock)

    def get(self, name: str, zone: str) -> Node | None:
        from google.api_core import exceptions

        path = node_path(self.project, zone, name)
        try:
            return _to_node(self._call(f"get node {name} in {zone}", lambda: self.client.get_node(name=path)), zone)
        except exceptions.NotFound:
            return None

    def wait_ready(self, node: Node, timeout_s: float) -> Node:
        deadline = self.clock() + timeout_s
        while True:
            current = self.get(node.name, node.zone)
            state = current.state if current else "DELETED"
            if state == "READY":
                return current
            if state in ("PREEMPTED", "TERMINATED", "DELETED", "DELETING") or self.clock() > deadline:
                raise ProvisionError(f"node {node.name} in {node.zone} is {state}, not READY",
                                     [ZoneAttempt(node.zone, state.lower(), "waiting for READY")])
            self.retry.sleep(self.poll_s)

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

    def delete(self, name: str, zone: str, kind: str = NODE) -> bool:
        """A queued resource is deleted with force=true, which deletes its node too."""
        from google.api_core import exceptions

        path, what = node_path(self.project, zone, name, kind), f"delete {kind} {name} in {zone}"
        if kind == NODE:
            send = functools.partial(self.client.delete_node, name=path)
        else:
            send = functools.partial(self.client.delete_queued_resource, request={"name": path, "force": True})
        try:
            self._wait(self._call(what, send), what, DELETE_TIMEOUT_S)
        except exceptions.NotFound:
            return False
        return True

    def list(self, labels: dict[str, str], zones: tuple[str, ...]) -> list[Node]:
        """A zone the API does not know (a typo some run recorded) is logged and skipped, so it
        cannot stop teardown or the reaper in every other zone."""
        from google.api_core import exceptions

        found = []
        for zone in zones:
            try:
                found += [r for r in self._list_zone(zone) if _has_labels(r, labels)]
            except (exceptions.NotFound, exceptions.BadRequest) as exc:
                self.log(f"cannot list zone {zone} ({api_message(exc)}); skipped")
        return found

    def _list_zone(self, zone: str) -> list[Node]:
        parent = node_path(self.project, zone)
        nodes = self._call(f"list nodes in {zone}", lambda: list(self.client.list_nodes(parent=parent)))
        queued = self._call(f"list queued resources in {zone}", lambda: list(self.client.list_queued_resources(parent=parent)))
        return [_queued_record(q, zone) for q in queued] + [_to_node(n, zone) for n in nodes]
