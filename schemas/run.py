"""`RunConfig`: the whole run, plus the derived (read-only) batch block.

Batch semantics (docs/configuration.md): rollout.batch_size is GLOBAL prompts per step; rollout.n is
the group size; sequences_global_per_step = batch_size * n. A GRPO group never spans
processes, so prompts split across processes and sequences across batch shards
(devices / tp). `derive()` checks the divisibility and computes the per-process and
per-device numbers, naming the fields and the nearest valid values when they do not fit.
"""
from pydantic import ConfigDict, Field, model_validator

from grpo_core.errors import UserError
from grpo_core.optim import warmup_steps_for
from schemas.algorithm import DEFAULT_REWARDS, AdvantageSection, LossSection, OverlongPenaltySection, RewardSpec
from schemas.base import NEW_OPTION, Section
from schemas.data import DataSection
from schemas.infra import CheckpointSection, EvalSection, LoggingSection, MeshSection
from schemas.model import ModelSection
from schemas.rollout import RolloutSection
from schemas.train import TrainSection


class DerivedBatch(Section):
    """Numbers derived from the config for one process/device count. Read-only."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    num_processes: int
    num_devices: int
    batch_shards: int = Field(description="Devices holding distinct batch slices (devices / tp).")
    prompts_global_per_step: int
    sequences_global_per_step: int
    prompts_per_process: int
    sequences_per_process: int
    sequences_per_device: int
    micro_batch_size: int
    grad_accum_steps: int
    padded_prompts: int = Field(description="Prompts added by allow_padding (0 = none).")
    warmup_steps: int
    total_steps: int


class RunConfig(Section):
    """Everything a run reads. Sub-configs are passed down explicitly."""

    model: ModelSection = Field(default_factory=ModelSection, description="Weights and dtype.")
    data: DataSection = Field(default_factory=DataSection, description="Prompt source.")
    rollout: RolloutSection = Field(default_factory=RolloutSection, description="Sampling and GLOBAL batch size.")
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [r.model_copy() for r in DEFAULT_REWARDS],
        min_length=1,
        description="Weighted reward functions; the total reward is their weighted sum.",
    )
    overlong_penalty: OverlongPenaltySection | None = Field(
        None, description="DAPO overlong reward shaping added to the rewards' total; null = off.",
        json_schema_extra=NEW_OPTION,
    )
    advantage: AdvantageSection = Field(default_factory=AdvantageSection, description="Advantage estimator.")
    loss: LossSection = Field(default_factory=LossSection, description="Policy loss.")
    train: TrainSection = Field(default_factory=TrainSection, description="Steps, micro-batching, optimizer.")
    mesh: MeshSection = Field(default_factory=MeshSection, description="Device mesh and processes.")
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection, description="Checkpointing.")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="W&B and progress output.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Held-out greedy evaluation.")

    @model_validator(mode="after")
    def _cross_checks(self):
        names = [r.name for r in self.rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"rewards lists a function twice ({names}); give each name once")
        if self.eval.every_steps and self.eval.num_prompts > self.data.num_eval:
            raise ValueError(
                f"eval.num_prompts ({self.eval.num_prompts}) exceeds data.num_eval ({self.data.num_eval}); "
                "lower eval.num_prompts or raise data.num_eval"
            )
        if self.overlong_penalty and self.overlong_penalty.cache_tokens > self.rollout.max_new_tokens:
            raise ValueError(
                f"overlong_penalty.cache_tokens ({self.overlong_penalty.cache_tokens}) exceeds "
                f"rollout.max_new_tokens ({self.rollout.max_new_tokens}); lower it (DAPO: a fifth of the length)"
            )
        if self.rollout.dynamic_sampling.enabled and self.rollout.n < 2:
            raise ValueError("rollout.dynamic_sampling needs groups of at least 2 samples to see a reward "
                             "spread; raise rollout.n or disable it")
        return self

    def derive(self, num_processes: int = 1, num_devices: int = 1) -> DerivedBatch:
        return derive_batch(self, num_processes, num_devices)


def _batch_shards(cfg: RunConfig, num_processes: int, num_devices: int) -> int:
    if num_devices % num_processes:
        raise UserError(f"{num_devices} devices do not split evenly over {num_processes} processes")
    shape = cfg.mesh.shape
    if shape == "auto":
        return num_devices
    if shape.dp * shape.fsdp * shape.tp != num_devices:
        raise UserError(
            f"mesh.shape dp*fsdp*tp = {shape.dp * shape.fsdp * shape.tp} but there are {num_devices} "
            "devices; make the product equal the device count or use mesh.shape=auto"
        )
    return shape.dp * shape.fsdp


def _fits(batch: int, n: int, num_processes: int, shards: int) -> bool:
    return batch % num_processes == 0 and (batch * n) % shards == 0


def _nearest_batch_sizes(batch: int, n: int, num_processes: int, shards: int) -> tuple[int, int]:
    lower = next((b for b in range(batch, 0, -1) if _fits(b, n, num_processes, shards)), 0)
    upper = next(b for b in range(batch, batch * shards * num_processes + 1) if _fits(b, n, num_processes, shards))
    return lower, upper


def _resolve_batch(cfg: RunConfig, num_processes: int, shards: int) -> int:
    batch, n = cfg.rollout.batch_size, cfg.rollout.n
    if _fits(batch, n, num_processes, shards):
        return batch
    lower, upper = _nearest_batch_sizes(batch, n, num_processes, shards)
    if cfg.rollout.allow_padding:
        return upper
    valid = " or ".join(str(v) for v in (lower, upper) if v)
    raise UserError(
        f"rollout.batch_size={batch} with rollout.n={n} does not split over {num_processes} process(es) "
        f"and {shards} batch shard(s): prompts must divide by the process count and batch_size*n by the "
        f"shard count; use rollout.batch_size={valid}, or set rollout.allow_padding=true"
    )


def _micro_batch(cfg: RunConfig, per_device: int) -> int:
    # At most micro_batch_size: a config sized for one CPU (the quickstart's 8) runs whole on a
    # slice whose devices hold fewer sequences.
    micro = min(cfg.train.micro_batch_size or per_device, per_device)
    if per_device % micro:
        divisors = [d for d in range(1, per_device + 1) if per_device % d == 0]
        raise UserError(
            f"train.micro_batch_size={micro} does not divide the {per_device} sequences per device; "
            f"use one of {divisors}"
        )
    return micro


def derive_batch(cfg: RunConfig, num_processes: int = 1, num_devices: int = 1) -> DerivedBatch:
    """Per-process and per-device numbers for this process/device count (see module doc)."""
    shards = _batch_shards(cfg, num_processes, num_devices)
    batch = _resolve_batch(cfg, num_processes, shards)
    sequences = batch * cfg.rollout.n
    per_device = sequences // shards
    micro = _micro_batch(cfg, per_device)
    return DerivedBatch(
        num_processes=num_processes,
        num_devices=num_devices,
        batch_shards=shards,
        prompts_global_per_step=batch,
        sequences_global_per_step=sequences,
        prompts_per_process=batch // num_processes,
        sequences_per_process=sequences // num_processes,
        sequences_per_device=per_device,
        micro_batch_size=micro,
        grad_accum_steps=per_device // micro,
        padded_prompts=batch - cfg.rollout.batch_size,
        warmup_steps=warmup_steps_for(cfg.train.optimizer.lr_schedule, cfg.train.steps),
        total_steps=cfg.train.steps,
    )
