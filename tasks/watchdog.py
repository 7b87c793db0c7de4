"""The phase watchdog: a phase that makes no progress for `logging.phase_timeout_s` ends the run.

A device program that never finishes (a collective whose peers took another path, a
wedged chip) blocks the thread that waits on it inside C++: on a TPU for good, on CPU
until XLA's rendezvous aborts the process with SIGABRT. Python cannot raise into that
thread (jax releases the GIL while it waits, so other threads run, but an exception or a
Prefect task timeout is only delivered when the waiting thread returns to Python;
tests/tasks/test_watchdog.py blocks in a jitted loop that never ends). So a
separate thread watches a timestamp: the thread that runs the phases sets
`(step, phase, since)` when a phase starts and ends (`phase()`); when a phase has run
longer than the timeout, the watchdog thread logs ONE sentence naming the step and the
phase (stderr, hence the job's log the smoke monitor reads, tpu/errors.py), writes it to
`hang.txt` in the run directory, best-effort marks the run's Prefect task and flow runs
Failed, and ends the process with `os._exit(1)`, the only way out of a thread stuck in XLA.

Why this is safe:
- It touches no device and no JAX state: the thread only reads a tuple the phase thread
  replaces whole (an atomic assignment) and a monotonic clock; this module imports no jax.
  The run's device programs stay dispatched from one thread (docs/dispatch.md).
- Ending the process anywhere leaves the run resumable, as `kill -9` does: phase artifacts
  are written atomically (temp file + rename), a Prefect cache record points only at a
  whole artifact, and orbax commits a checkpoint atomically (temporary directory, then
  rename), so a background save cut short is ignored and the rerun replays from the last
  committed checkpoint (tests/flows/test_resume.py kills a run during a background save).
  `os._exit` skips the exit hook that waits for a save in flight, on purpose: that save
  may be what hangs.
- The timeout measures one phase from its start, XLA compiles included (the first
  step's, and a new prompt width's): the default (schemas/infra.py) leaves room for the
  slowest compile measured for a shipped config.
"""
from __future__ import annotations

import contextvars
import functools
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple
from uuid import UUID

logger = logging.getLogger("grpo_flows.watchdog")
EXIT_CODE = 1
_PREFECT_MARK_S = 5.0  # at most this long for the best-effort Prefect state update


class Watched(NamedTuple):
    step: int
    phase: str
    since: float
    prefect_runs: tuple[tuple[str, UUID], ...]  # ("task" | "flow", run id) of the phase's task and step flow


def hang_sentence(step: int, phase: str, timeout_s: float) -> str:
    """The one line a hang prints (tpu/errors.py recognises `step N hung in its P phase`)."""
    return (f"step {step} hung in its {phase} phase (no progress for {timeout_s:g} s), so the run stopped; "
            "rerun the same command to resume, or raise logging.phase_timeout_s if the phase is only slow "
            "(0 turns the watchdog off)")


class PhaseWatchdog:
    """Ends the process when one phase runs longer than `timeout_s` (see the module doc).

    `clock` and `exit` are injectable for tests; `check()` is one look at the clock.
    """

    def __init__(self, timeout_s: float, run_dir: Path, process_index: int = 0,
                 clock: Callable[[], float] = time.monotonic, exit: Callable[[int], None] = os._exit):
        self.timeout_s, self.clock, self.exit = timeout_s, clock, exit
        self.report_path = report_path(run_dir, process_index)
        self.flow_run = _prefect_run_ids(flow_only=True)  # the train flow's run, when there is one
        # Per thread: a split run's rollout runs beside the update (flows/train.py).
        self._current: dict[int, Watched] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def phase(self, step: int, name: str):
        """Watch `name` of `step` while the block runs; a phase nested inside (the update's
        checkpoint save) is watched on its own, and the outer one restarts its clock after it."""
        thread = threading.get_ident()
        outer = self._current.get(thread)
        runs = tuple(dict.fromkeys(_prefect_run_ids() + self.flow_run))
        self._current[thread] = Watched(step, name, self.clock(), runs)
        try:
            yield
        finally:
            if outer:
                self._current[thread] = outer._replace(since=self.clock())
            else:
                self._current.pop(thread, None)

    def check(self) -> bool:
        """Fire (and return True) when the current phase has run past the timeout."""
        late = [w for w in list(self._current.values()) if self.clock() - w.since >= self.timeout_s]
        if not late:
            return False
        self._fire(late[0])
        return True

    def start(self) -> "PhaseWatchdog":
        # In a copy of this context: Prefect's settings (its API URL) are context variables.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._watch,),
                                        name="grpo-phase-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        poll_s = min(1.0, self.timeout_s / 10)
        while not self._stop.wait(poll_s):
            if self.check():
                return

    def _fire(self, current: Watched) -> None:
        sentence = hang_sentence(current.step, current.phase, self.timeout_s)
        try:
            self.report_path.write_text(sentence + "\n")
        except OSError:
            pass  # the log line below still says it
        logger.error(sentence)
        _mark_prefect_failed(current.prefect_runs, sentence)
        sys.stdout.flush()
        sys.stderr.flush()
        self.exit(EXIT_CODE)


def report_path(run_dir: Path, process_index: int = 0) -> Path:
    """Where a hang's sentence is written: `hang.txt` in the run directory (`hang.pN.txt` for process N)."""
    return Path(run_dir) / ("hang.txt" if process_index == 0 else f"hang.p{process_index}.txt")


_ACTIVE: contextvars.ContextVar[PhaseWatchdog | None] = contextvars.ContextVar("grpo_phase_watchdog", default=None)


@contextmanager
def watching(timeout_s: float | None, run_dir: Path, process_index: int = 0):
    """Watch the phases run inside the block (`phase()`); no watchdog when timeout_s is 0/None."""
    if not timeout_s:
        yield None
        return
    report_path(run_dir, process_index).unlink(missing_ok=True)  # a hang of an earlier attempt
    dog = PhaseWatchdog(timeout_s, run_dir, process_index).start()
    token = _ACTIVE.set(dog)
    try:
        yield dog
    finally:
        _ACTIVE.reset(token)
        dog.stop()


@contextmanager
def phase(step: int, name: str):
    """Watch `name` of `step` with the watchdog of the enclosing `watching()`, if any."""
    dog = _ACTIVE.get()
    if dog is None:
        yield
        return
    with dog.phase(step, name):
        yield


def watched(task_fn):
    """Run a phase task's function (first argument: its PhaseInput) as a watched phase."""

    @functools.wraps(task_fn)
    def run(phase_input, *args, **kwargs):
        with phase(phase_input.step, phase_input.phase):
            return task_fn(phase_input, *args, **kwargs)

    return run


def _prefect_run_ids(flow_only: bool = False) -> tuple[tuple[str, UUID], ...]:
    """The ids of the Prefect task run and flow run this thread is in (none outside Prefect)."""
    if "prefect.context" not in sys.modules:
        return ()  # no Prefect run without Prefect (a test's stand-in job)
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx, flow_ctx = (None if flow_only else TaskRunContext.get()), FlowRunContext.get()
    runs = [("task", task_ctx.task_run.id)] if task_ctx else []
    if flow_ctx and flow_ctx.flow_run:
        runs.append(("flow", flow_ctx.flow_run.id))
    return tuple(runs)


def _mark_prefect_failed(runs: tuple[tuple[str, UUID], ...], message: str) -> None:
    """Best effort, bounded: the Prefect UI shows the hang's runs Failed instead of Running."""
    if runs:
        marker = threading.Thread(target=contextvars.copy_context().run, args=(_set_failed, runs, message),
                                  name="grpo-watchdog-prefect", daemon=True)
        marker.start()
        marker.join(_PREFECT_MARK_S)


def _set_failed(runs: tuple[tuple[str, UUID], ...], message: str) -> None:
    try:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL
        from prefect.states import Failed

        if not PREFECT_API_URL.value():
            return  # an ephemeral API would start a server of its own, here of all places
        with get_client(sync_client=True) as client:
            for kind, run_id in runs:
                setter = client.set_task_run_state if kind == "task" else client.set_flow_run_state
                setter(run_id, Failed(message=message), force=True)
    except Exception as err:  # the process ends either way; the sentence is already out
        logger.debug("could not mark the Prefect runs failed: %s", err)
