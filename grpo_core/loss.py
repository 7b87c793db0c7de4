"""Clipped policy-gradient loss with optional k3 KL, and loss aggregations by name.

Per completion token (r = exp(logp - old_logp), A = the sequence's advantage):

    pg  = max(-r*A, -clip(r, 1 - eps_low, 1 + eps_high)*A)        PPO clip
    pg  = min(pg, -c*A)  where A < 0, when clip_ratio_c = c is set  dual clip
    pg *= min(exp(old_logp - sampler_logp), tis_cap)               TIS, when tis_cap is set
    pg *= [entropy >= quantile(entropy, 1 - q)]                     top-entropy tokens, q < 1
    kl  = exp(ref - logp) - (ref - logp) - 1                        k3, >= 0
    per_token = pg + beta * kl

The ratio r depends on `importance_sampling_level`:
    token           r_t = exp(logp_t - old_t)                           (PPO, GRPO)
    sequence        r_t = s = exp(mean_t(logp_t - old_t)) for every t    (GSPO)
    sequence_token  r_t = sg(s) * exp(logp_t - sg(logp_t))               (GSPO-token)
GSPO's objective averages one term per completion: with seq_mean_token_mean the
sequence-level loss is exactly that (the term is constant over a row's tokens).
TIS (truncated importance sampling) corrects for the sampler's numerics differing from
the trainer's: the weight has no gradient. The entropy quantile is taken over the valid
tokens of the batch the loss sees (a micro-batch, across devices), as TRL does.

Stale rollouts (rollout.max_staleness=1: step k's completions are sampled with the
params version k-1 while the update runs on version k). In the first epoch old_logp is
the trainer's own log-prob under version k, so the ratio r is 1 at every
importance_sampling_level: the PPO clip and GSPO's sequence ratio bound the move away
from version k and see nothing of the lag. The lag is corrected by TIS alone: its
weight min(exp(old_logp - sampler_logp), tis_cap) is then the truncated per-token ratio
pi_k / pi_{k-1} (times the sampler/trainer numeric mismatch), the truncated
importance-sampling estimate of the policy gradient for samples from pi_{k-1}. Without
tis_cap the lag goes uncorrected.

An aggregation turns per-token values into (numerator, denominator); the loss is their
ratio. `normalizer` overrides the denominator so the train step can divide every
micro-batch by the denominator of the WHOLE step batch (`loss_denominator` on the full
mask): summing micro-batch losses then equals the loss of the unsplit batch.
Rows without any valid token (batch padding) count in no denominator.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from grpo_core.registry import make_registry

Aggregation = Callable[[jax.Array, jax.Array, int | None], tuple[jax.Array, jax.Array]]
# Aggregations take (per_token_bt, mask_bt, max_completion_length) and return (num, den).
LOSS_AGGREGATIONS, register_loss_aggregation = make_registry("loss aggregation")

# Caps |ref - logp| inside exp() so a far-off token gives a large finite KL, not inf.
_KL_LOG_RATIO_CAP = 20.0


def _rows_with_tokens(mask_bt: jax.Array) -> jax.Array:
    """Number of rows holding at least one valid token (float32 scalar)."""
    return jnp.sum(jnp.any(mask_bt > 0, axis=1)).astype(jnp.float32)


@register_loss_aggregation("token_mean")
def token_mean(per_token_bt, mask_bt, max_completion_length=None):
    """Sum over all valid tokens / number of valid tokens (DAPO-style, the default)."""
    return jnp.sum(per_token_bt * mask_bt), jnp.sum(mask_bt)


@register_loss_aggregation("seq_mean_token_mean")
def seq_mean_token_mean(per_token_bt, mask_bt, max_completion_length=None):
    """Mean over sequences of each sequence's token mean (original GRPO)."""
    per_seq = jnp.sum(per_token_bt * mask_bt, axis=1) / jnp.maximum(jnp.sum(mask_bt, axis=1), 1.0)
    return jnp.sum(per_seq), _rows_with_tokens(mask_bt)


@register_loss_aggregation("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(per_token_bt, mask_bt, max_completion_length=None):
    """Sum over valid tokens / (B * max_completion_length) (Dr. GRPO: no length bias)."""
    if max_completion_length is None:
        raise ValueError("seq_mean_token_sum_norm needs max_completion_length")
    den = _rows_with_tokens(mask_bt) * float(max_completion_length)
    return jnp.sum(per_token_bt * mask_bt), den


def loss_denominator(agg: str, mask_bt: jax.Array, max_completion_length: int | None = None):
    """The denominator aggregation `agg` uses for mask_bt [B, T] (pass the whole step batch)."""
    mask_bt = mask_bt.astype(jnp.float32)
    return LOSS_AGGREGATIONS[agg](jnp.zeros_like(mask_bt), mask_bt, max_completion_length)[1]


def k3_kl(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
    """Per-token k3 estimate of KL(policy || ref): exp(d) - d - 1 with d = ref - logp."""
    d = jnp.clip(ref_logps - logps, -_KL_LOG_RATIO_CAP, _KL_LOG_RATIO_CAP)
    return jnp.exp(d) - d - 1.0


def clipped_pg(ratio_bt, adv_b1, eps_low, eps_high, clip_ratio_c=None):
    """Per-token clipped surrogate loss [B, T] and bool masks of the binding clips."""
    unclipped = -adv_b1 * ratio_bt
    clipped = -adv_b1 * jnp.clip(ratio_bt, 1.0 - eps_low, 1.0 + eps_high)
    pg = jnp.maximum(unclipped, clipped)
    flags = {"clip_frac_low": (ratio_bt < 1.0 - eps_low) & (adv_b1 < 0),
             "clip_frac_high": (ratio_bt > 1.0 + eps_high) & (adv_b1 > 0)}
    if clip_ratio_c is not None:
        dual = -adv_b1 * clip_ratio_c
        flags["clip_frac_dual"] = (adv_b1 < 0) & (dual < pg)
        pg = jnp.where(adv_b1 < 0, jnp.minimum(pg, dual), pg)
    return pg, flags


def _masked_mean(x_bt, mask_bt, count):
    return jnp.sum(x_bt * mask_bt) / jnp.maximum(count, 1.0)


IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence", "sequence_token")


def importance_ratio(logps_bt, old_logps_bt, mask_bt, level: str = "token"):
    """Importance ratio [B, T] at `level` (module doc); mask_bt float32 [B, T]."""
    log_ratio = logps_bt - old_logps_bt
    if level == "token":
        return jnp.exp(log_ratio)
    seq_b1 = jnp.sum(log_ratio * mask_bt, axis=1, keepdims=True) / jnp.maximum(jnp.sum(mask_bt, axis=1, keepdims=True), 1.0)
    if level == "sequence":
        return jnp.broadcast_to(jnp.exp(seq_b1), logps_bt.shape)
    if level == "sequence_token":
        return jnp.exp(jax.lax.stop_gradient(seq_b1) + logps_bt - jax.lax.stop_gradient(logps_bt))
    raise ValueError(f"unknown importance_sampling_level {level!r}; known: {IMPORTANCE_SAMPLING_LEVELS}")


def masked_quantile(x_bt, mask_bt, q: float):
    """The q-quantile (linear interpolation, like numpy/torch) of x over mask > 0; 0 when empty."""
    flat = jnp.where(mask_bt > 0, x_bt, jnp.inf).reshape(-1)
    ordered = jnp.sort(flat)
    n = jnp.sum(mask_bt > 0)
    pos = q * jnp.maximum(n - 1, 0).astype(jnp.float32)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
    value = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return jnp.where(n > 0, value, 0.0)


def top_entropy_mask(entropy_bt, mask_bt, quantile: float):
    """float32 [B, T]: 1 on valid tokens whose entropy is in the top `quantile` fraction."""
    threshold = masked_quantile(entropy_bt, mask_bt, 1.0 - quantile)
    return ((entropy_bt >= threshold) & (mask_bt > 0)).astype(jnp.float32)


def tis_weight(old_logps_bt, sampler_logps_bt, cap: float):
    """min(pi_old / pi_sampler, cap) per token, without gradient."""
    return jax.lax.stop_gradient(jnp.minimum(jnp.exp(old_logps_bt - sampler_logps_bt), cap))


def policy_loss(
    logps, old_logps, advantages, mask, agg="token_mean", clip_eps_low=0.2, clip_eps_high=0.2,
    beta=0.0, ref_logps=None, max_completion_length=None, clip_ratio_c=None,
    normalizer=None, entropy=None, importance_sampling_level="token", sampler_logps=None, tis_cap=None,
    top_entropy_quantile=1.0,
):
    """Scalar loss and metrics for one batch.

    logps, old_logps, ref_logps, entropy, sampler_logps, mask: [B, T] (mask 1 on
    completion tokens); advantages: [B]. normalizer: denominator to use instead of this
    batch's own. Metrics are means over this batch's valid tokens (plus "tokens", their
    count) so a caller can combine micro-batches weighted by "tokens".
    """
    if agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {agg!r}; known: {sorted(LOSS_AGGREGATIONS)}")
    mask = mask.astype(jnp.float32)
    ratio = importance_ratio(logps, old_logps, mask, importance_sampling_level)
    per_token, flags = clipped_pg(ratio, advantages[:, None], clip_eps_low, clip_eps_high, clip_ratio_c)
    count = jnp.sum(mask)
    metrics = {name: _masked_mean(flag.astype(jnp.float32), mask, count) for name, flag in flags.items()}
    metrics["ratio_mean"] = _masked_mean(ratio, mask, count)
    if top_entropy_quantile < 1.0:
        if entropy is None:
            raise ValueError("top_entropy_quantile < 1 needs the per-token entropy")
        selected = top_entropy_mask(entropy, mask, top_entropy_quantile)
        per_token = per_token * selected
        metrics["entropy_selected_frac"] = _masked_mean(selected, mask, count)
    if tis_cap is not None and sampler_logps is not None:
        weight = tis_weight(old_logps, sampler_logps, tis_cap)
        per_token = per_token * weight
        metrics["tis_weight_mean"] = _masked_mean(weight, mask, count)
    metrics["pg_loss"] = _masked_mean(per_token, mask, count)
    if ref_logps is not None:
        kl = k3_kl(logps, ref_logps)
        metrics["kl"] = _masked_mean(kl, mask, count)
        if beta:
            per_token = per_token + beta * kl
    if entropy is not None:
        metrics["entropy"] = _masked_mean(entropy, mask, count)
    num, den = LOSS_AGGREGATIONS[agg](per_token, mask, max_completion_length)
    den = den if normalizer is None else normalizer
    metrics["tokens"] = count
    return num / jnp.maximum(den, 1e-8), metrics
