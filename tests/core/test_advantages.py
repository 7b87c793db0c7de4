"""Advantage estimators against hand-computed values (ddof, eps, constant groups, clip)."""
import math

import numpy as np
import pytest

from grpo_core.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    group_correctness_stats,
)
from grpo_core.errors import UserError

# Three groups of 4: A = [1, 2, 3, 6] (mean 3), B constant, C = [0, 1, 0, 0] (mean 1/4).
REWARDS = np.array([1, 2, 3, 6, 5, 5, 5, 5, 0, 1, 0, 0], np.float32)
STD_A = math.sqrt(14 / 3)          # sum of squared deviations 14, ddof=1
STD_C = 0.5                        # sum of squared deviations 0.75, ddof=1
EPS = 1e-4


def test_grpo_hand_values():
    adv, stats = compute_advantages("grpo", REWARDS, 4)
    expected = [-2 / (STD_A + EPS), -1 / (STD_A + EPS), 0, 3 / (STD_A + EPS),
                0, 0, 0, 0,
                -0.25 / (STD_C + EPS), 0.75 / (STD_C + EPS), -0.25 / (STD_C + EPS),
                -0.25 / (STD_C + EPS)]
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    assert adv.dtype == np.float32 and adv.shape == (12,)
    assert stats["zero_std_group_fraction"] == pytest.approx(1 / 3)


def test_grpo_ddof_and_eps():
    # [0, 2]: ddof=1 std sqrt(2), ddof=0 std 1.
    r = np.array([0.0, 2.0])
    adv, _ = compute_advantages("grpo", r, 2, eps=1.0, std_ddof=1)
    np.testing.assert_allclose(adv, [-1 / (math.sqrt(2) + 1), 1 / (math.sqrt(2) + 1)], rtol=1e-6)
    adv, _ = compute_advantages("grpo", r, 2, eps=1.0, std_ddof=0)
    np.testing.assert_allclose(adv, [-0.5, 0.5], rtol=1e-6)
    adv, _ = compute_advantages("grpo", r, 2, eps=0.0, std_ddof=0)
    np.testing.assert_allclose(adv, [-1.0, 1.0], rtol=1e-6)


def test_dr_grpo_hand_values():
    adv, _ = compute_advantages("dr_grpo", REWARDS, 4)
    np.testing.assert_allclose(adv, [-2, -1, 0, 3, 0, 0, 0, 0, -.25, .75, -.25, -.25], rtol=1e-6)


RLOO_A = [1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2]          # r_i minus mean of the other three
RLOO_C = [0 - 1 / 3, 1 - 0, 0 - 1 / 3, 0 - 1 / 3]


def test_rloo_hand_values():
    adv, _ = compute_advantages("rloo", REWARDS, 4)
    np.testing.assert_allclose(adv, RLOO_A + [0] * 4 + RLOO_C, rtol=1e-6, atol=1e-7)


def test_reinforce_pp_whitens_informative_samples_only():
    adv, _ = compute_advantages("reinforce_pp", REWARDS, 4)
    informative = np.array(RLOO_A + RLOO_C)   # mean 0; squares sum to 236/9 over 8 samples
    std = math.sqrt((236 / 9) / 7)
    expected = np.concatenate([informative[:4] / (std + EPS), np.zeros(4),
                               informative[4:] / (std + EPS)])
    np.testing.assert_allclose(adv, expected, rtol=1e-6, atol=1e-7)


def test_global_whitening_ignores_groups():
    adv, _ = compute_advantages("global", REWARDS, 4)
    mean, std = 33 / 12, math.sqrt(60.25 / 11)
    np.testing.assert_allclose(adv, (REWARDS - mean) / (std + EPS), rtol=1e-5)
    assert np.all(adv[4:8] != 0)              # a constant group inside a varied batch
    flat, _ = compute_advantages("global", np.full(8, 0.7, np.float32), 4)
    assert np.all(flat == 0)                  # a constant batch


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_constant_groups_get_exact_zero(name):
    # 0.1 is not exact in float32: the zero must not depend on cancellation.
    rewards = np.array([0.1] * 3 + [0.3, 0.7, 0.1] + [1e6] * 3, np.float32)
    adv, stats = compute_advantages(name, rewards, 3)
    assert np.all(adv[:3] == 0) and np.all(adv[6:] == 0) and np.any(adv[3:6] != 0)
    assert stats["zero_std_group_fraction"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_group_size_one_gives_zero(name):
    adv, stats = compute_advantages(name, np.array([1.0, 0.0, 3.0]), 1)
    if name == "global":
        assert np.any(adv != 0)
    else:
        assert np.all(adv == 0) and stats["zero_std_group_fraction"] == 1.0


def test_clip():
    adv, _ = compute_advantages("dr_grpo", REWARDS, 4, clip=0.5)
    np.testing.assert_allclose(adv, [-.5, -.5, 0, .5, 0, 0, 0, 0, -.25, .5, -.25, -.25])


def test_bad_inputs():
    with pytest.raises(UserError, match="'ppo'"):
        compute_advantages("ppo", REWARDS, 4)
    with pytest.raises(ValueError, match="groups of 5"):
        compute_advantages("grpo", REWARDS, 5)


def test_group_correctness_stats():
    correct = np.array([1, 0, 0, 0,  0, 0, 0, 0,  0, 1, 1, 0])
    stats = group_correctness_stats(correct, 4)
    assert stats == {"pass@1": pytest.approx(1 / 3), "pass@k": pytest.approx(2 / 3),
                     "mean@k": pytest.approx(3 / 12)}
    stats = group_correctness_stats(correct.astype(bool), 4)
    assert stats["mean@k"] == pytest.approx(0.25)
