"""build_optimizer / build_lr_schedule against optax's own pieces."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grpo_core.optim import OPTIMIZERS, build_lr_schedule, build_optimizer
from schemas.train import LrScheduleSection, OptimizerSection

STEPS = 200


def _toy_params():
    return {"w": jnp.arange(6.0).reshape(2, 3) / 10, "b": jnp.array([0.5, -0.25])}


def _grads(seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    return {"w": jax.random.normal(keys[0], (2, 3)), "b": jax.random.normal(keys[1], (2,))}


@pytest.mark.parametrize("step", [0, 5, 10, 100, 199, 200])
def test_default_schedule_matches_optax(step):
    ours = build_lr_schedule(LrScheduleSection(), STEPS)
    ref = optax.warmup_cosine_decay_schedule(0.0, 1e-6, 10, STEPS, 0.0)
    assert float(ours(step)) == pytest.approx(float(ref(step)), rel=1e-6, abs=1e-15)


def test_schedule_shape_warmup_peak_end():
    sched = build_lr_schedule(LrScheduleSection(peak_value=1e-3, warmup_steps=20), 100)
    assert float(sched(0)) == 0.0
    assert float(sched(20)) == pytest.approx(1e-3)
    assert float(sched(60)) == pytest.approx(5e-4, rel=1e-3)  # cosine midpoint of the decay
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule_with_and_without_warmup():
    flat = build_lr_schedule(LrScheduleSection(type="constant", peak_value=3e-4, warmup_ratio=0.0), 50)
    assert [float(flat(s)) for s in (0, 25, 50)] == pytest.approx([3e-4] * 3)
    ramp = build_lr_schedule(LrScheduleSection(type="constant", peak_value=3e-4, warmup_steps=10), 50)
    assert float(ramp(0)) == 0.0 and float(ramp(5)) == pytest.approx(1.5e-4) and float(ramp(30)) == pytest.approx(3e-4)


def test_warmup_steps_null_uses_ratio():
    sched = build_lr_schedule(LrScheduleSection(peak_value=1.0, warmup_ratio=0.1), 100)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(5)) == pytest.approx(0.5)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_updates_a_toy_pytree(name):
    cfg = OptimizerSection(name=name, lr_schedule=LrScheduleSection(type="constant", peak_value=0.1, warmup_ratio=0))
    opt = build_optimizer(cfg, 10)
    params = _toy_params()
    state = opt.init(params)
    updates, _ = opt.update(_grads(0), state, params)
    new = optax.apply_updates(params, updates)
    for leaf_old, leaf_new in zip(jax.tree.leaves(params), jax.tree.leaves(new)):
        assert np.all(np.asarray(leaf_old) != np.asarray(leaf_new))


def test_defaults_equal_the_documented_optimizer():
    historical = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.lion(optax.warmup_cosine_decay_schedule(0.0, 1e-6, 10, STEPS, 0.0), weight_decay=1e-8),
    )
    ours = build_optimizer(OptimizerSection(), STEPS)
    params_a = params_b = _toy_params()
    state_a, state_b = historical.init(params_a), ours.init(params_b)
    for step in range(15):
        grads = jax.tree.map(lambda g: g * 3.0, _grads(step))  # norm > 1: clipping is active
        up_a, state_a = historical.update(grads, state_a, params_a)
        up_b, state_b = ours.update(grads, state_b, params_b)
        params_a, params_b = optax.apply_updates(params_a, up_a), optax.apply_updates(params_b, up_b)
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(params_a["w"]), np.asarray(_toy_params()["w"]))


def test_clip_norm_zero_disables_clipping():
    cfg = OptimizerSection(name="sgd", clip_norm=0.0, weight_decay=0.0,
                           lr_schedule=LrScheduleSection(type="constant", peak_value=1.0, warmup_ratio=0))
    opt = build_optimizer(cfg, 1)
    grads = {"w": jnp.full((2, 3), 10.0), "b": jnp.zeros(2)}
    updates, _ = opt.update(grads, opt.init(_toy_params()), _toy_params())
    np.testing.assert_allclose(np.asarray(updates["w"]), -10.0)


def test_sgd_weight_decay_is_added_to_the_gradient():
    cfg = OptimizerSection(name="sgd", clip_norm=0.0, weight_decay=0.5,
                           lr_schedule=LrScheduleSection(type="constant", peak_value=1.0, warmup_ratio=0))
    opt = build_optimizer(cfg, 1)
    params = _toy_params()
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.5 * np.asarray(params["w"]), rtol=1e-6)
