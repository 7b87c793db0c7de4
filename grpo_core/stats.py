"""How sure is "0.19 -> 0.44"? Paired bootstrap intervals for model-vs-model differences.

Two models scored on the SAME problems give paired per-problem scores. Resampling
problems (not the two models independently) keeps the pairing, so problems that are
easy or hard for both models cancel out of the difference and the interval is as tight
as the data allow. The interval is the percentile interval of the resampled mean
differences (Efron & Tibshirani 1993, ch. 13); with a few dozen problems it is wide,
which is the point of reporting it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

_CHUNK = 1000  # resamples per batch: bounds the [chunk, N] index matrix


def paired_bootstrap(base_n: np.ndarray, other_n: np.ndarray, num_resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean difference other - base over N paired problems and its bootstrap interval.

    base_n, other_n: per-problem scores [N] in the same problem order.
    Returns {"diff", "low", "high"}; the interval covers `confidence` of the resampled
    differences (equal tails). Seeded, so the same scores give the same interval.
    """
    base_n, other_n = np.asarray(base_n, np.float64), np.asarray(other_n, np.float64)
    if base_n.shape != other_n.shape or base_n.ndim != 1 or base_n.size == 0:
        raise ValueError(f"paired scores need two equal non-empty [N] arrays, got {base_n.shape} and {other_n.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff_n = other_n - base_n
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, num_resamples, _CHUNK):
        rows = min(_CHUNK, num_resamples - start)
        means.append(diff_n[rng.integers(0, diff_n.size, size=(rows, diff_n.size))].mean(axis=1))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.concatenate(means), [tail, 1.0 - tail])
    return {"diff": float(diff_n.mean()), "low": float(low), "high": float(high)}


def compare_scores(names: Sequence[str], scores: Sequence[Mapping[str, np.ndarray]], num_resamples: int = 10_000,
                   confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """One row per metric: each model's mean and, for every model after the first (the
    baseline), its difference from the baseline with a paired bootstrap interval.

    scores[m][metric]: per-problem scores [N] of model m, problems in the same order for all.
    Row keys: "metric", then each name -> mean, then "<name> - <baseline>" -> {diff, low, high}.
    """
    if len(names) != len(scores) or not names:
        raise ValueError("compare_scores needs one score dict per model name")
    rows = []
    for metric in scores[0]:
        row = {"metric": metric}
        row.update({name: float(np.mean(s[metric])) for name, s in zip(names, scores)})
        for name, s in zip(names[1:], scores[1:]):
            row[f"{name} - {names[0]}"] = paired_bootstrap(scores[0][metric], s[metric], num_resamples,
                                                           confidence, seed)
        rows.append(row)
    return rows
