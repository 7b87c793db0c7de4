"""Paired bootstrap intervals and the model-comparison rows built from them."""
import numpy as np
import pytest

from grpo_core.advantages import group_correctness
from grpo_core.stats import compare_scores, paired_bootstrap


def test_difference_is_the_mean_paired_difference_and_inside_its_interval():
    base = np.array([0, 1, 0, 0, 1, 0, 0, 1], float)
    other = np.array([1, 1, 0, 1, 1, 0, 1, 1], float)
    result = paired_bootstrap(base, other)
    assert result["diff"] == pytest.approx(3 / 8)
    assert result["low"] <= result["diff"] <= result["high"]
    assert result["low"] >= 0.0  # no resample of these pairs can make `other` worse
    assert paired_bootstrap(base, other) == result  # seeded


def test_pairing_cancels_what_both_models_share():
    # Problem difficulty varies a lot but `other` is better by exactly 0.25 on every problem:
    # every resample has the same mean difference, so the interval has no width.
    base = np.random.default_rng(0).uniform(0, 0.75, 50)
    result = paired_bootstrap(base, base + 0.25)
    assert result == pytest.approx({"diff": 0.25, "low": 0.25, "high": 0.25})
    assert paired_bootstrap(base, base) == pytest.approx({"diff": 0.0, "low": 0.0, "high": 0.0})


def test_interval_width_matches_the_normal_approximation():
    # Differences of +-1 with equal odds over 400 problems: sd 1, so the 95% interval is
    # about +-1.96 / sqrt(400) = +-0.098 around the mean.
    signs = np.tile([1.0, -1.0], 200)
    result = paired_bootstrap(np.zeros(400), signs, num_resamples=4000)
    assert result["diff"] == pytest.approx(0.0)
    assert result["high"] - result["low"] == pytest.approx(2 * 0.098, rel=0.12)
    narrower = paired_bootstrap(np.zeros(400), signs, num_resamples=4000, confidence=0.5)
    assert narrower["high"] - narrower["low"] < 0.5 * (result["high"] - result["low"])


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="equal non-empty"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="equal non-empty"):
        paired_bootstrap(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(np.zeros(3), np.zeros(3), confidence=1.0)


def test_compare_scores_rows_have_every_model_and_the_differences_from_the_first():
    correct_a = np.array([1, 0, 0, 0, 1, 1, 0, 0])  # 4 problems x 2 samples
    correct_b = np.array([1, 1, 0, 1, 1, 1, 1, 1])
    scores = [group_correctness(correct_a, 2), group_correctness(correct_b, 2), group_correctness(correct_a, 2)]
    rows = compare_scores(["base", "tuned", "again"], scores)
    assert [r["metric"] for r in rows] == ["pass@1", "pass@k", "mean@k"]
    mean_k = rows[2]
    assert mean_k["base"] == pytest.approx(3 / 8) and mean_k["tuned"] == pytest.approx(7 / 8)
    assert mean_k["tuned - base"]["diff"] == pytest.approx(0.5)
    assert mean_k["again - base"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    assert set(mean_k) == {"metric", "base", "tuned", "again", "tuned - base", "again - base"}
