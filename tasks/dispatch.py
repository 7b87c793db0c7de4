"""One dispatch thread per run: every device program of a training session is dispatched
from the thread that owns it.

JAX does not promise that two threads dispatching SPMD programs onto the same devices
enqueue them in the same order on every device. When the orders differ, each device
waits in another program's collective: XLA:CPU aborts after 40 s in its rendezvous, a
TPU hangs. So a session has one owner thread. The thread that opens it owns it (the
flow's thread, or the warm start's helper thread, which finishes all its device work
and then hands the session over: `hand_over`). Every session method that dispatches a
device program checks the owner first and names the offending thread, so a violation
is an immediate error instead of a rare hang.

Threads that never touch a device need no check: the checkpoint commit watcher only
waits for orbax's file writes (orbax's barriers in multi-process runs use the
distributed runtime's key-value store, not device programs: grpo_core/checkpoint.py),
Prefect runs the phase tasks of the async step flow in the flow's own thread, and the
embedded server's orphan watchdog (flows/local_server.py) is another process.
"""
from __future__ import annotations

import threading

import jax


class WrongDispatchThread(RuntimeError):
    """A device program of a run was about to be dispatched from a thread that does not own it."""


class DispatchOwner:
    """The thread allowed to dispatch a session's device programs."""

    def __init__(self):
        self._thread = threading.current_thread()

    @property
    def thread_name(self) -> str:
        return self._thread.name

    def check(self, what: str) -> None:
        """Raise WrongDispatchThread unless the calling thread owns the session."""
        here = threading.current_thread()
        if here is not self._thread:
            raise WrongDispatchThread(
                f"{what}: a device program dispatched from thread {here.name!r}, but this run's "
                f"programs are dispatched from {self._thread.name!r} (one dispatch thread per run)")

    def hand_over(self, *state) -> None:
        """Give the session to the calling thread. `state`: the device arrays the previous
        owner made; they must be computed already (the previous owner waits for them before
        it finishes), which is checked here without dispatching anything."""
        unfinished = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array) and not x.is_ready()]
        if unfinished:
            raise WrongDispatchThread(f"{len(unfinished)} arrays of thread {self._thread.name!r} were still being "
                                      "computed when it handed the session over")
        self._thread = threading.current_thread()
