"""Every Literal of allowed names in the schema equals its registry in grpo_core."""
import typing

from grpo_core.advantages import ADVANTAGE_ESTIMATORS
from grpo_core.loss import LOSS_AGGREGATIONS
from grpo_core.rewards import REWARD_FUNCTIONS
from schemas.algorithm import AggregationName, EstimatorName, RewardName


def test_reward_names_equal_the_registry():
    assert set(typing.get_args(RewardName)) == set(REWARD_FUNCTIONS)


def test_estimator_names_equal_the_registry():
    assert set(typing.get_args(EstimatorName)) == set(ADVANTAGE_ESTIMATORS)


def test_aggregation_names_equal_the_registry():
    assert set(typing.get_args(AggregationName)) == set(LOSS_AGGREGATIONS)
