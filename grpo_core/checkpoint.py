"""Orbax checkpoints of the training state: params, optimizer state and a JSON sidecar.

A checkpoint labelled k holds the state AFTER step k's update, i.e. the state a run
needs to start step k + 1. The sidecar carries everything else a resume needs: the next
step, the data stream position and the PRNG seed state.

Saves are asynchronous (orbax's async manager): `save` returns once the state is copied
off the device, and the write runs in a background thread while training continues.
The arrays are written without compression unless asked (`compress`): orbax's default
zstd costs several times the CPU of an uncompressed save for a file under a tenth smaller
(`python -m benchmarks.checkpoint_write`; figures in benchmarks/RESULTS.md), and on a
small host that CPU comes out of the next step's rollout.
orbax writes into a temporary directory and renames it (a commit file on object stores)
only when everything is on disk, so a save killed half-way leaves no checkpoint, and
`latest()`/`steps()` never report the save still in flight. One save is in flight at a
time: the next `save` first waits for the previous one. `wait()` (also run by `close()`
and, for any writer still open, when the process exits) waits for the last one. A crash
before a save commits costs nothing but replayed work: the run resumes from the newest
committed checkpoint (flows/train.py replays the cached advantages through `update`).

The write's background threads dispatch no device program. In a multi-process run orbax
synchronises processes around a save with barriers, by default a collective device
program (`sync_global_devices`), some from its background thread: that program could
enter the devices in another order than the training step the run's own thread
dispatches at the same time (tasks/dispatch.py). Checkpoints therefore switch orbax to
the barriers of the distributed runtime's key-value store, which touch no device.

Readers that are not the run (export, eval) open the directory `read_only`: they never
create, delete or clean up anything, so a run still training keeps its checkpoints, and
a save killed half-way (a temporary orbax directory) is neither listed nor removed.
"""
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from absl import flags


class _ReadOnlyNotice(logging.Filter):
    """Drops orbax's "Given directory is read only" warning: readers open it so on purpose,
    and the warning would reach the terminal of every `grpo export` / `grpo eval`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Given directory is read only" not in record.getMessage()


@dataclasses.dataclass
class SaveTimes:
    """Seconds one save took. blocking_s: what `save` held its caller (waiting for the
    previous save + copying the state off the device); wait_previous_s: the first part of
    it; write_s: from the copy's start to the commit (None while the write is in flight)."""

    label: int
    blocking_s: float
    wait_previous_s: float
    write_s: float | None = None


_WRITERS: "weakref.WeakSet[Checkpoints]" = weakref.WeakSet()
_exit_hook = threading.Lock()
_exit_hook_registered = False


def _finish_writes_at_exit() -> None:
    for writer in list(_WRITERS):
        try:
            writer.wait()
        except Exception:  # the process is exiting; the save is lost and was never committed
            logging.getLogger(__name__).exception("a checkpoint write failed while the process exited")


def _wait_at_exit(writer: "Checkpoints") -> None:
    """Make an exiting process finish `writer`'s save in flight first. threading's exit hooks
    run before concurrent.futures stops its executors, which orbax's background write still
    needs (`atexit` runs after that: the write would fail with "cannot schedule new futures")."""
    global _exit_hook_registered
    with _exit_hook:
        if not _exit_hook_registered:
            threading._register_atexit(_finish_writes_at_exit)  # noqa: SLF001 (no public hook runs early enough)
            _exit_hook_registered = True
        _WRITERS.add(writer)


def _barriers_without_devices() -> None:
    """orbax's process barriers through the distributed runtime, not a device program (module doc)."""
    flag = flags.FLAGS["experimental_orbax_use_distributed_barrier"]
    if not flag.value:
        flag.parse("true")  # parse() also marks it present: orbax reads it before absl parsed argv


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int = 2, read_only: bool = False, asynchronous: bool = True,
                 before_commit: Callable[[int], None] | None = None, compress: bool = False):
        """before_commit(label): called in the background once a save's files are written and
        before it commits (async saves only; the resume tests kill the process there).
        compress: zstd-compress the arrays (orbax's default). Off by default: float32
        weights and Adam moments shrink by under a tenth for seconds of CPU per GB, which a
        background write takes from training on a small host (module doc). Checkpoints
        restore either way."""
        self.asynchronous, self.read_only = asynchronous and not read_only, read_only
        hook = before_commit if self.asynchronous else None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
            save_interval_steps=0 if read_only else 1, enable_async_checkpointing=self.asynchronous,
            cleanup_tmp_directories=not read_only,  # a killed save's leftovers; only the run writes here
            async_options=ocp.AsyncOptions(post_finalization_callback=lambda: hook(self._in_flight)) if hook else None,
        )
        if read_only:
            _quiet_read_only_notice()
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             handler_registry=None if read_only else _writer_registry(compress))
        self._in_flight: int | None = None
        self._watcher: threading.Thread | None = None
        self._error: BaseException | None = None
        self._failed = False  # a background write failed and its error was raised
        if self.asynchronous:
            _wait_at_exit(self)
        if jax.process_count() > 1:
            _barriers_without_devices()

    def latest(self) -> int | None:
        """Step label of the newest complete (committed) checkpoint, or None."""
        steps = self.steps()
        return steps[-1] if steps else None

    def steps(self) -> list[int]:
        """Step labels of every complete checkpoint, oldest first (never the save in flight)."""
        in_flight = self._in_flight
        return sorted(s for s in self.manager.all_steps() if s != in_flight)

    def save(self, label: int, params, opt_state, meta: dict) -> SaveTimes:
        """Save the state as checkpoint `label`; returns once it is copied off the device
        (after the write too when not asynchronous). The arrays may be donated afterwards."""
        started = time.perf_counter()
        self.wait()
        copy_started = time.perf_counter()
        self._in_flight = label
        state = {"params": params, "opt_state": opt_state}
        try:
            self.manager.save(
                label,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        except BaseException:
            self._in_flight = None
            raise
        saved = SaveTimes(label, time.perf_counter() - started, copy_started - started)
        if not self.asynchronous:
            self._in_flight, saved.write_s = None, saved.blocking_s
            return saved
        self._watcher = threading.Thread(target=self._commit_watch, args=(saved, copy_started),
                                         name=f"checkpoint-{label}-commit")
        self._watcher.start()
        return saved

    def _commit_watch(self, saved: SaveTimes, copy_started: float) -> None:
        try:
            self.manager.wait_until_finished()
            saved.write_s = time.perf_counter() - copy_started
        except BaseException as err:  # re-raised by the caller's next wait()
            self._error = err
        finally:
            self._in_flight = None

    def wait(self) -> None:
        """Block until the save in flight (if any) has committed; raise its error if it failed."""
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        if self._error is not None:
            error, self._error, self._failed = self._error, None, True
            raise error

    def restore(self, step: int, params_like, opt_state_like) -> tuple[dict, object, dict]:
        """(params, opt_state, meta) of checkpoint `step`, placed like the given templates."""
        abstract = jax.tree.map(_abstract, {"params": params_like, "opt_state": opt_state_like})
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored.state["params"], restored.state["opt_state"], dict(restored.meta)

    def restore_params(self, step: int, params_like) -> tuple[dict, dict]:
        """(params, meta) of checkpoint `step` without its optimizer state.

        params_like: pytree of arrays or ShapeDtypeStructs (with a sharding) giving each
        leaf's placement; every process of a multi-process run wrote its own shards, and
        orbax reads whichever shards each requested placement needs.
        """
        if not self.read_only:  # a writer's manager is bound to whole-state restores; read as a reader
            reader = Checkpoints(self.directory, read_only=True)
            try:
                return reader.restore_params(step, params_like)
            finally:
                reader.close()
        abstract = jax.tree.map(_abstract, params_like)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract}, partial_restore=True,
                restore_args=ocp.checkpoint_utils.construct_restore_args({"params": abstract}),
            ),
            meta=ocp.args.JsonRestore(),
        ))
        return restored.state["params"], dict(restored.meta)

    def close(self) -> None:
        """Wait for the save in flight and for orbax's start-up sweep of leftover temporary
        directories (its own close waits only for saves), then release orbax's resources."""
        try:
            self.wait()
        finally:
            try:
                sweep = getattr(self.manager, "_cleanup_tmp_directory_future", None)
                if sweep is not None:
                    sweep.result()
                self.manager.close()
            except Exception:
                if not self._failed:  # orbax raises a failed write's error again; it was raised once
                    raise


class _UncompressedHandler(ocp.StandardCheckpointHandler):
    """orbax's StandardCheckpointHandler writing its arrays without zstd (its PyTree handler
    has the switch; the standard one does not pass it through)."""

    def __init__(self):
        super().__init__()
        self._impl = ocp.PyTreeCheckpointHandler(use_ocdbt=True, use_compression=False)


def _writer_registry(compress: bool):
    """Handlers of a run's checkpoint items: the state (uncompressed unless `compress`) and
    the JSON sidecar. None = orbax's defaults."""
    if compress:
        return None
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    state = _UncompressedHandler()
    registry.add("state", ocp.args.StandardSave, state)
    registry.add("state", ocp.args.StandardRestore, state)
    meta = ocp.JsonCheckpointHandler()
    registry.add("meta", ocp.args.JsonSave, meta)
    registry.add("meta", ocp.args.JsonRestore, meta)
    return registry


def _abstract(x) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def _quiet_read_only_notice() -> None:
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _ReadOnlyNotice) for f in absl.filters):
        absl.addFilter(_ReadOnlyNotice())
