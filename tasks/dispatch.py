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

A slice split into a sampler group and a trainer group (mesh.sampler_devices) has one
owner per group: the trainer group's is the session's owner, the sampler group's is its
own `GroupThread`, which runs the sampler's calls one at a time in submission order. The
two groups share no device, so their programs cannot interleave on one. The one program
that spans both, the reshard of new params onto the sampler group, runs on the sampler
thread while the trainer's owner waits for it (`GroupThread.run`): both groups' orders
are fixed at that point.

Threads that never touch a device need no check: the checkpoint commit watcher only
waits for orbax's file writes (orbax's barriers in multi-process runs use the
distributed runtime's key-value store, not device programs: grpo_core/checkpoint.py),
Prefect runs the phase tasks of the async step flow in the flow's own thread, and the
embedded server's orphan watchdog (flows/local_server.py) is another process.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

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


class GroupThread:
    """A device group's own dispatch thread: runs the calls given to it in submission order.

    The thread that calls `run` or `submit` may be any thread (a Prefect worker running a
    rollout task); only this one dispatches the group's programs (`owner`)."""

    def __init__(self, name: str):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.owner: DispatchOwner = self._pool.submit(DispatchOwner).result()  # owned by the pool's thread

    def submit(self, fn, *args) -> Future:
        return self._pool.submit(fn, *args)

    def run(self, fn, *args):
        """fn(*args) on this group's thread; the caller waits for it."""
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
