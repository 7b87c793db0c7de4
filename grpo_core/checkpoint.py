"""Orbax checkpoints of the training state: params, optimizer state and a JSON sidecar.

A checkpoint labelled k holds the state AFTER step k's update, i.e. the state a run
needs to start step k + 1. The sidecar carries everything else a resume needs: the next
step, the data stream position and the PRNG seed state. Saves are synchronous so a
checkpoint that `latest()` reports is complete (orbax commits it atomically).
"""
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest(self) -> int | None:
        """Step label of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

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
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            {"params": params_like, "opt_state": opt_state_like},
        )
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored.state["params"], restored.state["opt_state"], dict(restored.meta)

    def close(self) -> None:
        self.manager.close()
