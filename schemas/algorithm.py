"""`rewards:`, `advantage:` and `loss:` sections.

The allowed names mirror the registries in grpo_core (rewards, advantages, loss);
tests/schemas/test_registries.py keeps each Literal equal to its registry.
"""
from typing import Literal

from pydantic import Field, model_validator

from schemas.base import NEW_OPTION, Section

RewardName = Literal["gsm8k_correct", "think_answer_format", "tag_count", "states_number"]
EstimatorName = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "global"]
AggregationName = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
ImportanceSamplingLevel = Literal["token", "sequence", "sequence_token"]


class RewardSpec(Section):
    name: RewardName = Field(description="Registered reward function.")
    weight: float = Field(1.0, ge=-100.0, le=100.0, description="Weight in the total reward.")


class OverlongPenaltySection(Section):
    """DAPO's overlong reward shaping, added to the total reward."""

    cache_tokens: int = Field(
        ge=1, le=32768,
        description="Length of the soft-penalty zone: a completion longer than rollout.max_new_tokens - "
        "cache_tokens loses max_penalty x (its excess / cache_tokens), linearly up to max_penalty.",
    )
    max_penalty: float = Field(1.0, gt=0.0, le=100.0, description="Penalty at rollout.max_new_tokens tokens.")


DEFAULT_REWARDS = [
    RewardSpec(name="gsm8k_correct", weight=1.0),
    RewardSpec(name="think_answer_format", weight=0.5),
    RewardSpec(name="tag_count", weight=0.5),
]


class AdvantageSection(Section):
    estimator: EstimatorName = Field("grpo", description="Advantage estimator over each group of n samples.")
    eps: float = Field(1e-4, ge=0.0, le=1.0, description="Added to the group std before dividing (grpo).")
    std_ddof: Literal[0, 1] = Field(1, description="Delta degrees of freedom of the group std.")
    clip: float | None = Field(None, gt=0.0, description="Clip advantages to [-clip, clip]; null = off.")


class LossSection(Section):
    agg: AggregationName = Field(
        "token_mean",
        description="Loss aggregation: token_mean (over all valid tokens of the step), "
        "seq_mean_token_mean (original GRPO), seq_mean_token_sum_norm (Dr. GRPO).",
    )
    clip_eps_low: float = Field(0.2, ge=0.0, le=1.0, description="Ratio clip below: 1 - clip_eps_low.")
    clip_eps_high: float = Field(0.2, ge=0.0, le=10.0, description="Ratio clip above: 1 + clip_eps_high.")
    clip_ratio_c: float | None = Field(
        None, gt=1.0, description="Dual-clip constant for negative advantages (e.g. 3.0); null = off."
    )
    beta: float = Field(0.0, ge=0.0, le=10.0, description="KL (k3) coefficient to the frozen reference; 0 = no reference model.")
    max_completion_length: int | None = Field(
        None, ge=1, description="Dr. GRPO normaliser; null = rollout.max_new_tokens."
    )
    importance_sampling_level: ImportanceSamplingLevel = Field(
        "token",
        description="Importance ratio: token (PPO/GRPO, one per token), sequence (GSPO: one per "
        "completion, exp of the mean token log-ratio; use clip_eps_low/high ~3e-4/4e-4), "
        "sequence_token (GSPO-token: the sequence ratio's value with per-token gradients).",
        json_schema_extra=NEW_OPTION,
    )
    tis_cap: float | None = Field(
        None, gt=0.0, le=1000.0,
        description="Truncated importance sampling: weight each token's policy-gradient term by "
        "min(pi_old / pi_sampler, tis_cap), pi_sampler = the rollout's own log-probs (e.g. 2); null = off.",
        json_schema_extra=NEW_OPTION,
    )
    top_entropy_quantile: float = Field(
        1.0, gt=0.0, le=1.0,
        description="Only tokens in this top fraction of entropy (per micro-batch) get a "
        "policy-gradient term (e.g. 0.2); 1 = all tokens.",
        json_schema_extra=NEW_OPTION,
    )
    mask_truncated: bool = Field(
        False,
        description="DAPO: completions cut off at rollout.max_new_tokens (no EOS) are left out "
        "of the loss and of its normaliser.",
        json_schema_extra=NEW_OPTION,
    )
    skip_zero_advantage: bool = Field(
        True,
        description="Leave groups whose advantages are all 0 out of the update's forward/backward "
        "when that is exact (beta = 0, top_entropy_quantile = 1), a micro-batch at a time: informative groups "
        "move into the first micro-batches and the rest are not run (one compiled program; set "
        "train.micro_batch_size below the sequences per device to skip more finely). The normaliser still "
        "counts them.",
        json_schema_extra=NEW_OPTION,
    )

    @model_validator(mode="after")
    def _gspo_aggregation(self):
        if self.importance_sampling_level != "token" and self.agg == "seq_mean_token_sum_norm":
            raise ValueError(
                f"loss.importance_sampling_level={self.importance_sampling_level} (GSPO) averages one "
                "term per completion, which seq_mean_token_sum_norm would weight by length; use "
                "loss.agg=seq_mean_token_mean (GSPO's objective) or token_mean"
            )
        return self
