"""Orbax checkpoints of the training state: params, optimizer state and a JSON sidecar.

A checkpoint labelled k holds the state AFTER step k's update, i.e. the state a run
needs to start step k + 1. The sidecar carries everything else a resume needs: the next
step, the data stream position and the PRNG seed state. Saves are synchronous so a
checkpoint that `latest()` reports is complete (orbax commits it atomically).

Readers that are not the run (export, eval) open the directory `read_only`: they never
create, delete or clean up anything, so a run still training keeps its checkpoints, and
a save killed half-way (a temporary orbax directory) is neither listed nor removed.
"""
import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class _ReadOnlyNotice(logging.Filter):
    """Drops orbax's "Given directory is read only" warning: readers open it so on purpose,
    and the warning would reach the terminal of every `grpo export` / `grpo eval`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Given directory is read only" not in record.getMessage()


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int = 2, read_only: bool = False):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
            save_interval_steps=0 if read_only else 1, enable_async_checkpointing=False,
        )
        if read_only:
            _quiet_read_only_notice()
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest(self) -> int | None:
        """Step label of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        """Step labels of every complete checkpoint, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, params, opt_state, meta: dict) -> None:
        state = {"params": params, "opt_state": opt_state}
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self.manager.wait_until_finished()

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
        self.manager.close()


def _abstract(x) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def _quiet_read_only_notice() -> None:
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _ReadOnlyNotice) for f in absl.filters):
        absl.addFilter(_ReadOnlyNotice())
