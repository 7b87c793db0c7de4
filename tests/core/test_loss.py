"""Policy loss against hand-computed values: every aggregation, clips, dual clip, k3."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpo_core.loss import LOSS_AGGREGATIONS, k3_kl, loss_denominator, policy_loss

# Row 0: A=+1, ratios 1.0, 1.3 (high clip binds), 0.7 (no clip: A>0).
# Row 1: A=-2, ratios 1.3 (no clip: A<0), 0.7 (low clip binds), 1.1 masked out.
RATIOS = np.array([[1.0, 1.3, 0.7], [1.3, 0.7, 1.1]])
LOGPS = jnp.asarray(np.log(RATIOS) - 1.0, jnp.float32)
OLD = jnp.full((2, 3), -1.0, jnp.float32)
ADV = jnp.array([1.0, -2.0])
MASK = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)
# Per-token losses of the valid tokens: -1, -1.2, -0.7 | 2.6, 1.6  (sum 1.3, 5 tokens).


def test_token_mean_and_metrics():
    loss, m = policy_loss(LOGPS, OLD, ADV, MASK)
    assert float(loss) == pytest.approx(1.3 / 5, abs=1e-6)
    assert float(m["clip_frac_high"]) == pytest.approx(1 / 5)
    assert float(m["clip_frac_low"]) == pytest.approx(1 / 5)
    assert float(m["ratio_mean"]) == pytest.approx(5.0 / 5, abs=1e-6)
    assert float(m["tokens"]) == 5 and "kl" not in m and "clip_frac_dual" not in m


def test_seq_mean_token_mean():
    loss, _ = policy_loss(LOGPS, OLD, ADV, MASK, agg="seq_mean_token_mean")
    assert float(loss) == pytest.approx(((-1 - 1.2 - 0.7) / 3 + (2.6 + 1.6) / 2) / 2, abs=1e-6)


def test_seq_mean_token_sum_norm_divides_by_b_times_max_len():
    loss, _ = policy_loss(LOGPS, OLD, ADV, MASK, agg="seq_mean_token_sum_norm",
                          max_completion_length=4)
    assert float(loss) == pytest.approx(1.3 / (2 * 4), abs=1e-6)
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(LOGPS, OLD, ADV, MASK, agg="seq_mean_token_sum_norm")


def test_asymmetric_clip():
    # eps_high 0.4: ratio 1.3 on A>0 is no longer clipped; -1.2 becomes -1.3.
    loss, m = policy_loss(LOGPS, OLD, ADV, MASK, clip_eps_high=0.4)
    assert float(loss) == pytest.approx(1.2 / 5, abs=1e-6)
    assert float(m["clip_frac_high"]) == 0.0


def test_dual_clip_caps_negative_advantage_loss():
    # c=1.25 caps A=-2 tokens at 2.5: the ratio-1.3 token drops from 2.6 to 2.5.
    loss, m = policy_loss(LOGPS, OLD, ADV, MASK, clip_ratio_c=1.25)
    assert float(loss) == pytest.approx(1.2 / 5, abs=1e-6)
    assert float(m["clip_frac_dual"]) == pytest.approx(1 / 5)
    grad = jax.grad(lambda lp: policy_loss(lp, OLD, ADV, MASK, clip_ratio_c=1.25)[0])(LOGPS)
    assert float(grad[1, 0]) == 0.0           # the dual clip stops the gradient
    assert float(grad[1, 1]) == 0.0           # so does the low clip (ratio 0.7, A<0)


def test_clip_boundaries_and_gradients():
    adv = jnp.array([1.0])
    mask = jnp.ones((1, 2))

    def grad_at(ratio):
        lp = jnp.log(jnp.array([[ratio, 1.0]], jnp.float32))
        return jax.grad(lambda x: policy_loss(x, jnp.zeros((1, 2)), adv, mask)[0])(lp)[0, 0]

    # Inside the clip range d loss / d logp = -A * r / N; outside it is 0.
    assert float(grad_at(1.19)) == pytest.approx(-1.19 / 2, rel=1e-5)
    assert float(grad_at(1.21)) == 0.0
    assert float(grad_at(0.5)) == pytest.approx(-0.5 / 2, rel=1e-5)   # A>0: no low clip
    # Ratio exactly 1 with eps 0: both bounds bind with equality, no clip is counted.
    _, m = policy_loss(jnp.zeros((1, 2)), jnp.zeros((1, 2)), adv, mask,
                       clip_eps_low=0.0, clip_eps_high=0.0)
    assert float(m["clip_frac_low"]) == 0.0 and float(m["clip_frac_high"]) == 0.0


def test_k3_kl_values_and_beta():
    lp = jnp.array([[-1.0, -2.0]])
    ref = jnp.array([[-2.0, -1.0]])
    np.testing.assert_allclose(k3_kl(lp, ref), [[math.exp(-1), math.e - 2]], rtol=1e-6)
    np.testing.assert_allclose(k3_kl(ref, ref), [[0.0, 0.0]], atol=0)
    adv, mask = jnp.array([0.0]), jnp.ones((1, 2))
    loss, m = policy_loss(lp, lp, adv, mask, beta=0.1, ref_logps=ref)
    kl_mean = (math.exp(-1) + math.e - 2) / 2
    assert float(loss) == pytest.approx(0.1 * kl_mean, rel=1e-6)
    assert float(m["kl"]) == pytest.approx(kl_mean, rel=1e-6)
    loss0, m0 = policy_loss(lp, lp, adv, mask, beta=0.0, ref_logps=ref)
    assert float(loss0) == 0.0 and float(m0["kl"]) == pytest.approx(kl_mean, rel=1e-6)
    assert np.isfinite(float(k3_kl(jnp.array(0.0), jnp.array(500.0))))


def test_entropy_metric_is_masked_mean():
    ent = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    _, m = policy_loss(LOGPS, OLD, ADV, MASK, entropy=ent)
    assert float(m["entropy"]) == pytest.approx(3.0)


@pytest.mark.parametrize("agg", sorted(LOSS_AGGREGATIONS))
def test_normalizer_makes_row_splits_add_up(agg):
    key = jax.random.PRNGKey(0)
    lp = jax.random.normal(key, (4, 5)) * 0.1 - 1.0
    old = jnp.full((4, 5), -1.0)
    adv = jnp.array([1.0, -0.5, 2.0, 0.0])
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0.]])
    kw = dict(agg=agg, max_completion_length=5)
    full, _ = policy_loss(lp, old, adv, mask, **kw)
    den = loss_denominator(agg, mask, 5)
    parts = [policy_loss(lp[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2],
                         normalizer=den, **kw)[0] for i in (0, 2)]
    assert float(sum(parts)) == pytest.approx(float(full), rel=1e-6)
    # The fully masked row counts in no denominator.
    assert float(den) == {"token_mean": 9, "seq_mean_token_mean": 3,
                          "seq_mean_token_sum_norm": 15}[agg]


@pytest.mark.parametrize("agg", sorted(LOSS_AGGREGATIONS))
def test_all_masked_gives_zero_loss_and_grad(agg):
    mask = jnp.zeros((2, 3))
    f = lambda lp: policy_loss(lp, OLD, ADV, mask, agg=agg, max_completion_length=3,
                               beta=0.1, ref_logps=OLD)[0]
    assert float(f(LOGPS)) == 0.0
    assert np.all(np.asarray(jax.grad(f)(LOGPS)) == 0.0)
