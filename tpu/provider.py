"""The provider interface every TPU backend implements, and the plain records it returns.

A provider creates a node from a `NodeSpec` (trying zones in order), waits for READY, runs
argv commands on one or all workers (stdin carries secrets, never argv), copies files,
deletes, and lists nodes by label so a reaper can find leaked ones. Commands run with the
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


@dataclass(frozen=True)
class NodeSpec:
    """What to create. `zones` are tried in order; `labels` must be lowercase k/v strings."""

    name: str
    accelerator_type: str = "v6e-8"
    runtime_version: str = "v6e-ubuntu-2404"
    zones: tuple[str, ...] = ("europe-west4-a",)
    spot: bool = True
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Node:
    """A created node. `state` is the provider's state name (READY, PREEMPTED, ...)."""

    name: str
    zone: str
    accelerator_type: str
    workers: int = 1
    state: str = "CREATING"
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0


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

    `attempts` is [(zone, reason, message)] in the order tried; `reason` of the last one
    is the classified cause (capacity, quota_zero, permission, ...)."""

    def __init__(self, message: str, attempts: list[tuple[str, str, str]]):
        super().__init__(message)
        self.attempts = attempts


class Provider(abc.ABC):
    """One TPU backend. Every method is safe to call again (delete of a missing node is a no-op)."""

    kind: str

    @abc.abstractmethod
    def create(self, spec: NodeSpec) -> Node:
        """Create the node in the first zone that accepts it; raise ProvisionError otherwise."""

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
    def delete(self, name: str, zone: str) -> bool:
        """Delete the node; True if it existed. Blocks until the delete finished."""

    @abc.abstractmethod
    def list(self, labels: dict[str, str], zones: tuple[str, ...]) -> list[Node]:
        """Nodes carrying all of `labels` in the given zones."""
