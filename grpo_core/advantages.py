"""Advantage estimators over groups of completions, registered by name.

Rewards arrive as a flat [B] array in which each prompt's `group_size` completions are
contiguous (B = prompts * group_size). Every estimator receives them reshaped to
[G, K] (G groups of K = group_size) and returns advantages of the same shape.

A group whose rewards are all equal carries no learning signal. Every group-based
estimator (grpo, dr_grpo, rloo, reinforce_pp) gives such a group exactly 0, set
explicitly rather than left to float cancellation. `reinforce_pp` whitens over the
informative samples only (those of groups with spread), so constant groups stay 0 and
do not shrink the batch statistics. `global` is the group-free baseline: it whitens over
the whole batch, so a constant group inside a varied batch gets non-zero advantages;
only a batch whose rewards are all equal gets 0 everywhere.

The advantage phase runs on the host, so this is numpy (float64 inside, float32 out).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from grpo_core.errors import UserError
from grpo_core.registry import make_registry

Estimator = Callable[[np.ndarray, float, int], np.ndarray]
# Estimators take (rewards_gk, eps, std_ddof) and return advantages_gk.
ADVANTAGE_ESTIMATORS, register_advantage_estimator = make_registry("advantage estimator")


def _has_spread(rewards_gk: np.ndarray) -> np.ndarray:
    """bool[G, 1]: True where the group's rewards are not all equal."""
    return (rewards_gk.max(axis=1) > rewards_gk.min(axis=1))[:, None]


def _group_centred(rewards_gk: np.ndarray) -> np.ndarray:
    """[G, K] rewards minus their group mean, exactly 0 for constant groups."""
    centred = rewards_gk - rewards_gk.mean(axis=1, keepdims=True)
    return np.where(_has_spread(rewards_gk), centred, 0.0)


def _whiten(values: np.ndarray, eps: float, std_ddof: int) -> np.ndarray:
    """(v - mean) / (std + eps) over all of `values`; 0 when there are none or one."""
    if values.size <= std_ddof or values.max() == values.min():
        return np.zeros_like(values)
    return (values - values.mean()) / (values.std(ddof=std_ddof) + eps)


@register_advantage_estimator("grpo")
def grpo(rewards_gk: np.ndarray, eps: float, std_ddof: int) -> np.ndarray:
    """(r - mean_g) / (std_g + eps), std with `std_ddof` (GRPO, Shao et al. 2024)."""
    centred = _group_centred(rewards_gk)
    if rewards_gk.shape[1] <= std_ddof:
        return np.zeros_like(centred)
    return centred / (rewards_gk.std(axis=1, ddof=std_ddof, keepdims=True) + eps)


@register_advantage_estimator("dr_grpo")
def dr_grpo(rewards_gk: np.ndarray, eps: float, std_ddof: int) -> np.ndarray:
    """r - mean_g: Dr. GRPO drops the std division (Liu et al. 2025)."""
    return _group_centred(rewards_gk)


@register_advantage_estimator("rloo")
def rloo(rewards_gk: np.ndarray, eps: float, std_ddof: int) -> np.ndarray:
    """r_i - mean of the other K-1 rewards = K/(K-1) * (r_i - mean_g); 0 when K == 1."""
    k = rewards_gk.shape[1]
    if k == 1:
        return np.zeros_like(rewards_gk)
    return _group_centred(rewards_gk) * (k / (k - 1))


@register_advantage_estimator("reinforce_pp")
def reinforce_pp(rewards_gk: np.ndarray, eps: float, std_ddof: int) -> np.ndarray:
    """rloo, then whitened over the samples of groups with spread (others stay 0)."""
    adv = rloo(rewards_gk, eps, std_ddof)
    informative = np.broadcast_to(_has_spread(rewards_gk), adv.shape)
    out = np.zeros_like(adv)
    out[informative] = _whiten(adv[informative], eps, std_ddof)
    return out


@register_advantage_estimator("global")
def global_whitening(rewards_gk: np.ndarray, eps: float, std_ddof: int) -> np.ndarray:
    """(r - mean_B) / (std_B + eps) over the whole batch, ignoring groups."""
    return _whiten(rewards_gk, eps, std_ddof)


def _grouped(values: np.ndarray, group_size: int) -> np.ndarray:
    """Flat [B] -> [B // group_size, group_size] float64; B must divide."""
    values = np.asarray(values, np.float64).reshape(-1)
    if group_size < 1 or values.size % group_size:
        raise ValueError(f"{values.size} rewards do not split into groups of {group_size}")
    return values.reshape(-1, group_size)


def compute_advantages(
    name: str,
    rewards: np.ndarray,
    group_size: int,
    eps: float = 1e-4,
    std_ddof: int = 1,
    clip: float | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Advantages float32[B] for rewards[B] (groups contiguous) with estimator `name`.

    clip: when set, advantages are clipped to [-clip, clip] after estimation.
    Stats: zero_std_group_fraction, reward/advantage mean and std.
    """
    if name not in ADVANTAGE_ESTIMATORS:
        known = ", ".join(sorted(ADVANTAGE_ESTIMATORS))
        raise UserError(f"advantage estimator {name!r} is unknown; use one of {known}.")
    rewards_gk = _grouped(rewards, group_size)
    adv = ADVANTAGE_ESTIMATORS[name](rewards_gk, eps, std_ddof).reshape(-1)
    if clip is not None:
        adv = np.clip(adv, -clip, clip)
    stats = {
        "zero_std_group_fraction": float(np.mean(~_has_spread(rewards_gk))),
        "reward_mean": float(rewards_gk.mean()),
        "reward_std": float(rewards_gk.std()),
        "advantage_mean": float(adv.mean()),
        "advantage_std": float(adv.std()),
    }
    return adv.astype(np.float32), stats


def group_correctness(correct: np.ndarray, group_size: int) -> dict[str, np.ndarray]:
    """Per-prompt correctness [G] for correct[B] (bool or 0/1), groups of k = group_size.

    pass@1: whether the prompt's FIRST sample is correct (a single try).
    pass@k: whether at least one of its k samples is correct.
    mean@k: the fraction of its k samples that are correct (the lower-variance
      estimate of the single-try success rate).
    """
    correct_gk = _grouped(correct, group_size) > 0.5
    return {
        "pass@1": correct_gk[:, 0].astype(np.float64),
        "pass@k": correct_gk.any(axis=1).astype(np.float64),
        "mean@k": correct_gk.mean(axis=1),
    }


def group_correctness_stats(correct: np.ndarray, group_size: int) -> dict[str, float]:
    """`group_correctness` averaged over prompts (the per-step metrics)."""
    return {name: float(values.mean()) for name, values in group_correctness(correct, group_size).items()}
