"""The provider interface every TPU backend implements, and the plain records it returns.

A provider creates a node from a `NodeSpec` (trying zones in order, directly or through a
queued resource), waits for READY, runs argv commands on one or all workers (stdin carries
secrets, never argv), copies files, deletes, and lists nodes and queued resources by label
so teardown and the reaper find every one a run made. Commands run with the
worker's smoke directory as the working directory, so every path in tpu/scripts.py is
relative to it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

# Labels every VM we create carries; the reaper deletes OWNER_LABELS nodes older than a TTL,
# cancellation hooks delete the nodes whose RUN_LABEL names their flow run.
OWNER_LABELS = {"grpo-flows": "tpu-vm"}
RUN_LABEL = "grpo-run"
NODE, QUEUED_RESOURCE = "node", "queued resource"


@dataclass(frozen=True)
class NodeSpec:
    """What to create. `zones` are tried in order; `labels` must be lowercase k/v strings.

    provisioning "direct" creates the node in each zone until one accepts; "queued" puts a
    queued resource of the same name in each zone's queue for up to `queue_wait_s`. A create
    that has not finished after `create_timeout_s` counts as the zone failing."""

    name: str
    accelerator_type: str = "v6e-8"
    runtime_version: str = "v6e-ubuntu-2404"
    zones: tuple[str, ...] = ("europe-west4-a",)
    spot: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    provisioning: str = "direct"
    queue_wait_s: float = 900.0
    create_timeout_s: float = 1800.0


@dataclass(frozen=True)
class Node:
    """A created node, or (kind QUEUED_RESOURCE, from list()) a queued resource.

    `state` is the provider's state name (READY, PREEMPTED, WAITING_FOR_RESOURCES, ...)."""

    name: str
    zone: str
    accelerator_type: str
    workers: int = 1
    state: str = "CREATING"
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    kind: str = NODE

    def describe(self) -> str:
        return f"{self.kind} {self.name}@{self.zone}"


@dataclass(frozen=True)
class ZoneAttempt:
    """One zone tried: `outcome` is "created" or the classified reason it failed
    (capacity, quota_zero, timeout, queue_expired, skipped_region, ...)."""

    zone: str
    outcome: str
    detail: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        return f"zone {self.zone}: {self.outcome} after {self.seconds:.1f} s" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Provisioned:
    """The node a create made and every zone tried on the way, in order."""

    node: Node
    attempts: tuple[ZoneAttempt, ...] = ()


@dataclass(frozen=True)
class CommandResult:
    """One worker's result of one command."""

    worker: int
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class ProvisionError(RuntimeError):
    """Creating a node failed in every zone tried, or stopped on a non-retryable error.

    `attempts` are the zones in the order tried; the outcome of the last one is the
    classified cause (capacity, quota_zero, permission, ...)."""

    def __init__(self, message: str, attempts: list[ZoneAttempt]):
        super().__init__(message)
        self.attempts = attempts


class Provider(abc.ABC):
    """One TPU backend. Every method is safe to call again (delete of a missing node is a no-op)."""

    kind: str

    @abc.abstractmethod
    def create(self, spec: NodeSpec) -> Provisioned:
        """Create the node in the first zone that accepts it; raise ProvisionError otherwise.
        A zone that failed is left with nothing of this spec's name in it."""

    @abc.abstractmethod
    def get(self, name: str, zone: str) -> Node | None:
        """The node's current record, or None when it does not exist."""

    @abc.abstractmethod
    def wait_ready(self, node: Node, timeout_s: float) -> Node:
        """Block until the node is READY; raise ProvisionError if it is preempted or fails."""

    @abc.abstractmethod
    def run(self, node: Node, argv: list[str], *, worker: int | str = 0, stdin: bytes | None = None,
            timeout_s: float = 600) -> list[CommandResult]:
        """Run argv on one worker (int) or on every worker ("all"); results sorted by worker."""

    @abc.abstractmethod
    def copy_from(self, node: Node, remote_path: str, local_path: str, *, worker: int = 0) -> None:
        """Copy one file from a worker's smoke directory to this machine."""

    @abc.abstractmethod
    def delete(self, name: str, zone: str, kind: str = NODE) -> bool:
        """Delete the node (or queued resource and its node); True if it existed. Blocks
        until the delete finished."""

    @abc.abstractmethod
    def list(self, labels: dict[str, str], zones: tuple[str, ...]) -> list[Node]:
        """Nodes and queued resources carrying all of `labels` in the given zones."""
