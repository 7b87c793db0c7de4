"""A run directory's checkpoint as a `Model`, read without disturbing the run.

Export and eval read trained weights from a run that may still be training, or that was
trained by several processes. They take no run lock and open the checkpoints
read-only: only complete checkpoints are listed (a save killed half-way left a
temporary directory, which is skipped), nothing is created or cleaned up, and only the
params are restored (not the optimizer state, twice their size with adamw). orbax
assembles each requested leaf from the shards every process wrote, so a run of N
processes is read by one.

Checkpoint labels count updates applied: checkpoint K holds the params after K steps.

A LoRA run's checkpoints hold only the adapters: the base is loaded as the run loaded it
(in the dtype it trained with), checked against the checkpoint's base fingerprint, and
the adapters are merged into it; `RunCheckpoint.adapters` keeps them for a PEFT export.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from grpo_core import lora as lora_lib
from grpo_core.checkpoint import Checkpoints
from grpo_core.errors import UserError
from grpo_core.models.decoder import param_logical_axes, param_shapes
from grpo_core.models.model import Model
from grpo_core.sharding import named_sharding
from schemas.loading import read_yaml
from schemas.run import RunConfig
from tasks.model_source import model_spec, resolve_model

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass
class RunCheckpoint:
    """The params of one checkpoint of a run, with the run's config."""

    run_dir: Path
    config: RunConfig
    step: int
    model: Model
    meta: dict
    adapters: dict | None = None  # a LoRA run's adapters (model then holds them merged)


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` looks like a `grpo train` run directory (it has the run's config.yaml)."""
    return (Path(path) / CONFIG_FILE).is_file()


def run_config(run_dir: str | Path) -> RunConfig:
    """The config a run was trained with (run_dir/config.yaml)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE}); pass the --run-dir of a `grpo train` run.")
    return RunConfig.model_validate(read_yaml(path))


def checkpoint_step(run_dir: str | Path, step: int | None = None) -> int:
    """`step` if the run has that complete checkpoint, else (step None) its newest one."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    steps = Checkpoints(directory, read_only=True).steps() if directory.is_dir() else []
    if not steps:
        raise UserError(f"run directory {str(run_dir)!r} has no complete checkpoint yet; "
                        "let `grpo train` finish at least checkpoint.every_steps steps.")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise UserError(f"--step {step}: run directory {str(run_dir)!r} has no checkpoint {step}; "
                        f"its complete checkpoints are {', '.join(map(str, steps))}.")
    return step


def _placement(shape: tuple, names: tuple, dtype, mesh) -> jax.ShapeDtypeStruct:
    if mesh is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    else:
        sharding = named_sharding(mesh, names, shape)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def load_run_checkpoint(run_dir: str | Path, step: int | None = None, mesh=None) -> RunCheckpoint:
    """The params of checkpoint `step` (default: the newest complete one) of `run_dir` as a
    `Model` with the run's tokenizer, on one device or sharded over `mesh`."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    step = checkpoint_step(run_dir, step)
    model_cfg, tokenizer = model_spec(cfg.model, cfg.data.chat_template)
    spec = lora_lib.spec_from_config(cfg.model.lora)
    shapes, axes, dtype = param_shapes(model_cfg), param_logical_axes(model_cfg), cfg.model.dtype
    if spec is not None:
        shapes, axes, dtype = lora_lib.adapter_shapes(model_cfg, spec), lora_lib.adapter_logical_axes(model_cfg, spec), "float32"
    like = jax.tree.map(lambda shape, names: _placement(shape, names, dtype, mesh), shapes, axes,
                        is_leaf=lambda x: isinstance(x, tuple))
    checkpoints = Checkpoints(run_dir / CHECKPOINT_DIR, read_only=True)
    try:
        params, meta = checkpoints.restore_params(step, like)
    finally:
        checkpoints.close()
    if spec is None:
        return RunCheckpoint(run_dir, cfg, step, Model(model_cfg, params, tokenizer), meta)
    merged = Model(model_cfg, _merged_base(cfg, meta, params, spec, mesh), tokenizer)
    return RunCheckpoint(run_dir, cfg, step, merged, meta, adapters=params)


def _merged_base(cfg: RunConfig, meta: dict, adapters: dict, spec, mesh) -> dict:
    """The run's base weights (in the dtype it trained them in), checked against the
    checkpoint's fingerprint, with the adapters merged in."""
    from tasks.session import base_fingerprint, check_base

    section = cfg.model.model_copy(update={"dtype": meta.get("base_dtype", cfg.model.dtype)})
    base = resolve_model(section, cfg.train.seed, mesh, cfg.data.chat_template).params
    check_base(meta, base_fingerprint(base), cfg.model.name_or_path)
    return lora_lib.merge_program(spec, base)(base, adapters)
