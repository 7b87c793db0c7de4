"""GSPO, TIS, top-entropy selection and DAPO's overlong shaping against references written
from their definitions (GSPO paper, TRL GRPOTrainer semantics, DAPO paper), on odd shapes.

The references are plain float64 numpy (values) and a per-row autodiff-free formula
(gradients), independent of grpo_core.loss.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpo_core.loss import policy_loss
from grpo_core.rewards import overlong_penalty

B, T = 5, 7
TOL = 1e-5


def inputs(seed=0, spread=0.002):
    """logps/old_logps close enough that GSPO's tiny clip (3e-4 / 4e-4) binds for some rows."""
    rng = np.random.default_rng(seed)
    logps = rng.normal(-1.5, 0.5, (B, T))
    old = logps + rng.normal(0.0, spread, (B, T))
    lengths = np.array([7, 1, 4, 6, 3])
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
    adv = np.array([1.3, -0.7, 0.0, -2.1, 0.9])
    return logps, old, adv, mask


def ours(logps, old, adv, mask, **kw):
    f = lambda lp: policy_loss(lp, jnp.asarray(old, jnp.float32), jnp.asarray(adv, jnp.float32),
                               jnp.asarray(mask, jnp.float32), **kw)[0]
    lp = jnp.asarray(logps, jnp.float32)
    return float(f(lp)), np.asarray(jax.grad(f)(lp), np.float64)


def clipped_term(ratio, adv, lo, hi):
    """-min(r A, clip(r, 1 - lo, 1 + hi) A) and which branch carries the gradient."""
    unclipped, clipped = ratio * adv, np.clip(ratio, 1 - lo, 1 + hi) * adv
    return -np.minimum(unclipped, clipped), unclipped <= clipped


# ---- GSPO ------------------------------------------------------------------------------

def gspo_reference(logps, old, adv, mask, lo, hi):
    """GSPO (Zheng et al. 2025, eq. 5-7): s_i = exp(mean_t(logp - old)), J = mean_i of the
    clipped s_i A_i. Gradient: -A_i s_i / |y_i| on each valid token when unclipped."""
    n = mask.sum(1)
    s = np.exp(((logps - old) * mask).sum(1) / n)
    term, live = clipped_term(s, adv, lo, hi)
    grad = np.where(live, -adv * s / n, 0.0)[:, None] * mask / B
    return term.mean(), grad


@pytest.mark.parametrize("level", ["sequence", "sequence_token"])
def test_gspo_sequence_ratio_matches_the_paper(level):
    logps, old, adv, mask = inputs()
    value, grad = ours(logps, old, adv, mask, agg="seq_mean_token_mean", importance_sampling_level=level,
                       clip_eps_low=3e-4, clip_eps_high=4e-4)
    ref_value, ref_grad = gspo_reference(logps, old, adv, mask, 3e-4, 4e-4)
    _, live = clipped_term(np.exp(((logps - old) * mask).sum(1) / mask.sum(1)), adv, 3e-4, 4e-4)
    assert not live[adv != 0].all() and live[adv != 0].any()  # the clip binds for some rows, not all
    assert value == pytest.approx(ref_value, abs=TOL)
    np.testing.assert_allclose(grad, ref_grad, atol=TOL)


def test_gspo_differs_from_token_level_ratio():
    logps, old, adv, mask = inputs(spread=0.3)
    kw = dict(agg="seq_mean_token_mean", clip_eps_low=0.2, clip_eps_high=0.2)
    _, token = ours(logps, old, adv, mask, **kw)
    _, seq = ours(logps, old, adv, mask, importance_sampling_level="sequence", **kw)
    assert np.abs(token - seq).max() > 1e-3


def test_sequence_token_gets_per_token_gradients_with_per_token_advantage_weights():
    """GSPO-token: s_i,t = sg(s_i) pi(y_t) / sg(pi(y_t)); with token_mean each token's gradient
    is -A_i sg(s_i) / N (N = all valid tokens) when the sequence is unclipped."""
    logps, old, adv, mask = inputs(spread=0.05)
    _, grad = ours(logps, old, adv, mask, importance_sampling_level="sequence_token", clip_eps_low=0.2,
                   clip_eps_high=0.2)
    s = np.exp(((logps - old) * mask).sum(1) / mask.sum(1))
    _, live = clipped_term(s, adv, 0.2, 0.2)
    ref = np.where(live, -adv * s, 0.0)[:, None] * mask / mask.sum()
    np.testing.assert_allclose(grad, ref, atol=TOL)


# ---- TIS -------------------------------------------------------------------------------

def test_truncated_importance_sampling_matches_its_definition():
    """TRL/verl TIS: per-token PPO term times min(pi_old / pi_sampler, C), no gradient
    through the weight; token-mean aggregation."""
    logps, old, adv, mask = inputs(spread=0.2)
    sampler = old + np.random.default_rng(3).normal(0.0, 0.8, old.shape)
    cap = 2.0
    value, grad = ours(logps, old, adv, mask, sampler_logps=jnp.asarray(sampler, jnp.float32), tis_cap=cap)
    weight = np.minimum(np.exp(old - sampler), cap)
    assert (weight[mask > 0] == cap).any() and (weight[mask > 0] < cap).any()
    ratio = np.exp(logps - old)
    term, live = clipped_term(ratio, adv[:, None], 0.2, 0.2)
    n = mask.sum()
    assert value == pytest.approx(float((term * weight * mask).sum() / n), abs=TOL)
    ref_grad = np.where(live, -adv[:, None] * ratio, 0.0) * weight * mask / n
    np.testing.assert_allclose(grad, ref_grad, atol=TOL)


# ---- one step stale rollouts (rollout.max_staleness=1) -----------------------------------

def stale_inputs():
    """A first-epoch update on a stale rollout: old = the trainer's own log-probs (params
    version k), sampler = the rollout's log-probs (version k-1, one update away)."""
    logps, _, adv, mask = inputs()
    sampler = logps + np.random.default_rng(5).normal(0.0, 0.6, logps.shape)
    return logps, adv, mask, sampler


@pytest.mark.parametrize("level,agg", [("token", "token_mean"), ("sequence", "seq_mean_token_mean"),
                                       ("sequence_token", "seq_mean_token_mean")])
def test_tis_corrects_a_stale_sampler_with_the_truncated_policy_ratio(level, agg):
    """With old = the trainer's log-probs, the PPO/GSPO ratio is 1 at every level, and the
    loss is the truncated importance-sampling estimate of the policy gradient for samples
    drawn from pi_{k-1}: mean over rows/tokens of -A min(pi_k / pi_{k-1}, C) (per token)."""
    logps, adv, mask, sampler = stale_inputs()
    cap = 2.0
    value, grad = ours(logps, logps, adv, mask, agg=agg, importance_sampling_level=level,
                       sampler_logps=jnp.asarray(sampler, jnp.float32), tis_cap=cap)
    weight = np.minimum(np.exp(logps - sampler), cap)
    assert (weight[mask > 0] == cap).any() and (weight[mask > 0] < 1.0).any()
    per_token = -adv[:, None] * weight * mask
    if agg == "token_mean":
        ref_value, ref_grad = per_token.sum() / mask.sum(), per_token / mask.sum()
    else:
        ref_value = (per_token.sum(1) / mask.sum(1)).mean()
        ref_grad = per_token / mask.sum(1, keepdims=True) / B
    if level == "sequence":  # d s_i / d logp_t = s_i / |y_i| on every token of the row
        ref_grad = (per_token.sum(1, keepdims=True) / mask.sum(1, keepdims=True) ** 2 / B) * mask
    assert value == pytest.approx(float(ref_value), abs=TOL)
    np.testing.assert_allclose(grad, ref_grad, atol=TOL)


def test_without_tis_cap_a_stale_sampler_is_not_corrected():
    """loss.tis_cap null: the sampler's log-probs change nothing, so the lag goes uncorrected."""
    logps, adv, mask, sampler = stale_inputs()
    plain = ours(logps, logps, adv, mask)
    with_sampler = ours(logps, logps, adv, mask, sampler_logps=jnp.asarray(sampler, jnp.float32))
    assert plain[0] == with_sampler[0] and np.array_equal(plain[1], with_sampler[1])
    assert plain[0] == pytest.approx(float((-adv[:, None] * mask).sum() / mask.sum()), abs=TOL)


# ---- top-entropy tokens ----------------------------------------------------------------

@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.81])
def test_top_entropy_quantile_keeps_the_high_entropy_tokens(quantile):
    """TRL's top_entropy_quantile: threshold = quantile(valid entropies, 1 - q) (linear
    interpolation); tokens with entropy >= threshold keep their term; the normaliser is
    unchanged (all valid tokens)."""
    logps, old, adv, mask = inputs(spread=0.1)
    entropy = np.random.default_rng(7).gamma(2.0, 1.0, (B, T))
    value, grad = ours(logps, old, adv, mask, entropy=jnp.asarray(entropy, jnp.float32),
                       top_entropy_quantile=quantile)
    threshold = np.quantile(entropy[mask > 0], 1 - quantile)
    keep = (entropy >= threshold) & (mask > 0)
    assert 0 < keep.sum() < mask.sum()
    ratio = np.exp(logps - old)
    term, live = clipped_term(ratio, adv[:, None], 0.2, 0.2)
    n = mask.sum()
    assert value == pytest.approx(float((term * keep).sum() / n), abs=TOL)
    np.testing.assert_allclose(grad, np.where(live & keep, -adv[:, None] * ratio, 0.0) / n, atol=TOL)


# ---- DAPO overlong shaping -----------------------------------------------------------

def dapo_length_reward(length, max_len, cache):
    """DAPO eq. 13: 0 when |y| <= L_max - L_cache; (L_max - L_cache - |y|) / L_cache up to
    L_max; -1 beyond."""
    if length <= max_len - cache:
        return 0.0
    if length <= max_len:
        return (max_len - cache - length) / cache
    return -1.0


@pytest.mark.parametrize("max_len, cache, scale", [(40, 8, 1.0), (13, 5, 0.5), (9, 9, 2.0)])
def test_overlong_penalty_is_daposs_linear_soft_punishment(max_len, cache, scale):
    lengths = np.arange(0, max_len + 3)
    expected = [scale * dapo_length_reward(int(n), max_len, cache) for n in lengths]
    np.testing.assert_allclose(overlong_penalty(lengths, max_len, cache, scale), expected, atol=1e-6)
