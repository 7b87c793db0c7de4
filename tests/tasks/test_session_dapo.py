"""Dynamic sampling in the rollout phase (TrainSession without Prefect): rounds of reserved
prompts, the same selection when sampled again, rows that train, overlong shaping."""
import numpy as np
import pytest

from grpo_core import phases
from tasks.session import TrainSession
from train_helpers import tiny_config

DS = ["rollout.dynamic_sampling={enabled: true, max_rounds: 3}", "train.steps=3"]


@pytest.fixture
def session(tmp_path):
    opened = TrainSession.open(tiny_config(*DS, "overlong_penalty={cache_tokens: 2, max_penalty: 0.5}"),
                               tmp_path / "run")
    yield opened
    opened.close()


def test_each_step_reserves_max_rounds_batches_of_prompts(session):
    b, rounds = session.cfg.rollout.batch_size, 3
    ids = session.step_prompt_ids(1)
    assert len(ids) == b * rounds and len(set(ids)) == b * rounds
    assert session.data_state(1)["position"] == b * rounds
    assert ids[:b] == [it["prompt_id"] for it in session.global_items(1)]
    assert set(ids).isdisjoint(session.step_prompt_ids(0))


def test_dynamic_sampling_selects_groups_with_spread_and_is_deterministic(session):
    table, stats = session.sample_step(0)
    n, b = session.cfg.rollout.n, session.cfg.rollout.batch_size
    assert table.num_rows == b * n and table.column("group_id").to_pylist() == list(np.repeat(np.arange(b), n))
    assert set(table.column("prompt_id").to_pylist()) <= set(session.step_prompt_ids(0))
    assert 1 <= stats["dynamic_sampling_rounds"] <= 3
    assert stats["groups_sampled"] == stats["dynamic_sampling_rounds"] * b
    assert stats["groups_dropped"] == stats["groups_sampled"] - b
    rewards, reward_stats = session.score(table)
    spread = np.ptp(np.asarray(rewards.column("reward_total")).reshape(b, n), axis=1) > 0
    assert spread.sum() == b - stats["groups_filled"] and spread[: int(spread.sum())].all()
    assert "reward_overlong_penalty_mean" in reward_stats and "first_round_reward_mean" in stats
    again, _ = session.sample_step(0)
    assert again.equals(table)  # a pure function of the step and the params


def test_update_reports_the_rows_it_ran(session):
    table, _ = session.sample_step(0)
    rewards, _ = session.score(table)
    adv, adv_stats = phases.advantage_table(rewards, session.cfg.rollout.n, "grpo", 1e-4, 1, None)
    metrics = session.update(0, table, adv)
    informative = int((np.asarray(adv.column("advantage")) != 0).sum())
    assert metrics["rows_total"] == table.num_rows and informative <= metrics["rows_run"] <= table.num_rows
