"""`train:` section, including the optimizer (docs/configuration.md "Optimizer").

The default optimizer is lion(weight_decay=1e-8) over warmup_cosine (0 -> 1e-6 -> 0, 5%
warmup), after global-norm clipping at 1.0.
"""
from typing import Literal

from pydantic import Field

from grpo_core.optim import OPTIMIZERS, SCHEDULES
from schemas.base import Section

OptimizerName = Literal[tuple(OPTIMIZERS)]
ScheduleName = Literal[tuple(SCHEDULES)]


class LrScheduleSection(Section):
    type: ScheduleName = Field("warmup_cosine", description="Learning-rate schedule.")
    peak_value: float = Field(1e-6, ge=0.0, le=1.0, description="Learning rate after warmup.")
    init_value: float = Field(0.0, ge=0.0, le=1.0, description="Learning rate at step 0 (warmup start).")
    end_value: float = Field(0.0, ge=0.0, le=1.0, description="Learning rate at the last step (warmup_cosine).")
    warmup_ratio: float = Field(0.05, ge=0.0, le=1.0, description="Warmup as a fraction of train.steps, used when warmup_steps is null.")
    warmup_steps: int | None = Field(None, ge=0, description="Warmup steps; null = round(train.steps * warmup_ratio).")


class OptimizerSection(Section):
    name: OptimizerName = Field("lion", description="Optimizer from the grpo_core.optim registry.")
    clip_norm: float = Field(1.0, description="Clip gradients by global norm; <= 0 disables clipping.")
    weight_decay: float = Field(1e-8, ge=0.0, le=1.0, description="Decoupled weight decay (sgd: added to the gradient).")
    b1: float | None = Field(None, ge=0.0, lt=1.0, description="First-moment decay (lion/adamw); null = optax default; sgd: momentum.")
    b2: float | None = Field(None, ge=0.0, lt=1.0, description="Second-moment decay (lion/adamw); null = optax default.")
    eps: float = Field(1e-8, gt=0.0, le=1.0, description="adamw epsilon.")
    lr_schedule: LrScheduleSection = Field(default_factory=LrScheduleSection, description="Learning-rate schedule.")


class TrainSection(Section):
    steps: int = Field(100, ge=1, le=10_000_000, description="Training steps (each = rollout, reward, advantage, update).")
    ppo_epochs: int = Field(1, ge=1, le=64, description="Optimisation passes over each step's batch.")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Sequences per batch shard (device group) per micro-batch, at most (a shard holding fewer "
        "runs them at once); must divide the sequences per shard; null = all at once."
    )
    seed: int = Field(0, ge=0, description="Seed of parameter init (random models), sampling and shuffling.")
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection, description="Optimizer and schedule.")
    compilation_cache_dir: str | None = Field(
        None, min_length=1,
        description="jax's persistent compilation cache: a folder (shared between runs) or a gs:// path for TPU "
        "workers, so a second run of the same programs loads them instead of compiling; null = <run dir>/xla-cache. "
        "May change on resume.",
    )
