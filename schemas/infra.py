"""`mesh:`, `checkpoint:`, `logging:` and `eval:` sections."""
from typing import Literal

from pydantic import Field

from schemas.base import Section


class MeshShape(Section):
    dp: int = Field(1, ge=1, description="Data-parallel axis (replicated params, split batch).")
    fsdp: int = Field(1, ge=1, description="Fully-sharded data-parallel axis (params and batch split).")
    tp: int = Field(1, ge=1, description="Tensor-parallel axis (heads / MLP split).")


class MeshSection(Section):
    shape: Literal["auto"] | MeshShape = Field(
        "auto",
        description="'auto' = dp across processes, fsdp across the devices of each process; or "
        "explicit {dp, fsdp, tp} whose product equals the device count.",
    )
    sampler_devices: int = Field(
        0, ge=0, le=65536,
        description="Devices given to sampling alone (the first ones; on several hosts the same number of each host's, "
        "so a multiple of the process count); the rest train, "
        "and mesh.shape describes them. After each update the new params are resharded once onto "
        "the sampler's devices. With rollout.max_staleness=1 the rollout of step k+1 runs there while step k "
        "updates. 0 = no split: sampling and training take turns on every device.",
    )
    num_processes: int | None = Field(
        None, ge=1, description="Required JAX process count; the run fails fast when fewer join. null = whatever starts."
    )
    coordinator_address: str | None = Field(
        None, description="host:port of process 0 for jax.distributed.initialize; null = auto (TPU) or single process."
    )
    process_id: int | None = Field(None, ge=0, description="This process's id when not auto-detected.")
    init_timeout_s: int = Field(300, ge=5, le=3600, description="Seconds to wait for all processes to join.")


class CheckpointSection(Section):
    every_steps: int = Field(1, ge=1, description="Save params, optimizer state, data position and PRNG state every N steps.")
    keep: int = Field(2, ge=1, le=1000, description="Newest checkpoints kept on disk.")
    asynchronous: bool = Field(
        True, description="Write checkpoints in the background (the step waits only for the copy off the device; "
        "the run waits for the last write before it ends); false = the update phase waits for the whole write.",
    )
    compress: bool = Field(
        False, description="zstd-compress the saved arrays: ~7.5% smaller float32 checkpoints for ~3 s of CPU "
        "per GB written, taken from training while a background write runs. Checkpoints restore either way.",
    )


class WandbSection(Section):
    mode: Literal["online", "offline", "disabled"] = Field("disabled", description="W&B mode (process 0 only).")
    project: str = Field("grpo-flows", min_length=1, description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team); null = the key's default.")
    run_name: str | None = Field(None, description="W&B run name; null = the run directory's name.")


class LoggingSection(Section):
    wandb: WandbSection = Field(default_factory=WandbSection, description="Weights & Biases (API key from WANDB_API_KEY or a Prefect Secret, never config).")
    progress_bar: bool = Field(True, description="Show a progress bar in the CLI.")
    phase_timeout_s: float | None = Field(
        1800, ge=0, le=86_400,
        description="Seconds one phase of a step (rollout, reward, advantage, update, eval, a checkpoint save's "
        "blocking part) may run before the run stops with a one-line hang error (exit code 1) instead of "
        "waiting for ever; XLA compiles count inside their phase; 0 or null = no limit. 1800: over 7x the "
        "slowest compile of a shipped config's program on an idle host (240 s, a 3B/7B update for a TPU slice), "
        "above all of them on a loaded 2-core one (up to 1132 s), over twice the slowest healthy phase seen "
        "(a 13-minute CPU update on a memory-starved machine), and under the smoke job's 3600 s limit. Not in "
        "any cache key; may change on resume.",
    )


class EvalSection(Section):
    every_steps: int = Field(0, ge=0, description="Greedy accuracy on held-out prompts every N steps; 0 = off.")
    num_prompts: int = Field(32, ge=1, le=100_000, description="Held-out prompts per eval (at most data.num_eval).")
    max_new_tokens: int | None = Field(None, ge=1, description="Eval sampled length; null = rollout.max_new_tokens.")
