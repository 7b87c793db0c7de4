"""`rewards:`, `advantage:` and `loss:` sections.

The allowed names mirror the registries in grpo_core (rewards, advantages, loss);
tests/schemas/test_registries.py keeps each Literal equal to its registry.
"""
from typing import Literal

from pydantic import Field

from schemas.base import Section

RewardName = Literal["gsm8k_correct", "think_answer_format", "tag_count", "states_number"]
EstimatorName = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "global"]
AggregationName = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]


class RewardSpec(Section):
    name: RewardName = Field(description="Registered reward function.")
    weight: float = Field(1.0, ge=-100.0, le=100.0, description="Weight in the total reward.")


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
