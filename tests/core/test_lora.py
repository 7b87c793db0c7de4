"""LoRA update: parity with PEFT + torch, merged weights, every loss variant on 2 devices."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grpo_core import lora
from grpo_core.advantages import ADVANTAGE_ESTIMATORS, compute_advantages
from grpo_core.models.config import PRESETS
from grpo_core.models.decoder import init_params, param_logical_axes
from grpo_core.sharding import make_mesh, shard_params, tree_shardings
from grpo_core.train_step import Trainer
from test_train_step import B, make_batch

CFG = PRESETS["tiny-llama"]
SPEC = lora.LoraSpec(rank=4, alpha=12.0)  # scale 3: a wrong scale shows in every check


def mesh_of(n):
    return make_mesh({"fsdp": n}, devices=jax.devices()[:n])


def random_adapters(seed=1, spec=SPEC):
    """Adapters with B != 0 too (B = 0 would leave A's gradient at zero)."""
    adapters = lora.init_adapters(CFG, spec, jax.random.PRNGKey(seed))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 100), 16))
    return jax.tree.map(lambda x: np.asarray(0.05 * jax.random.normal(next(keys), x.shape) if not x.any() else x),
                        adapters)


def sharded(base, adapters, mesh, spec=SPEC):
    base = shard_params(base, param_logical_axes(CFG), mesh)
    adapters = jax.device_put(adapters, tree_shardings(lora.adapter_logical_axes(CFG, spec), adapters, mesh))
    return base, adapters


def lora_step(base, adapters, batch, optimizer, mesh, loss_cfg=None, spec=SPEC, **kw):
    trainer = Trainer(CFG, optimizer, loss_cfg, mesh=mesh, lora=spec, **kw)
    base, adapters = sharded(base, adapters, mesh, spec)
    opt_state = trainer.init_opt_state(adapters)
    new, opt_state, metrics = trainer.step(adapters, opt_state, trainer.shard_batch(batch), base)
    return jax.tree.map(np.asarray, new), metrics, base


def test_init_is_peft_kaiming_uniform_and_b_is_zero():
    adapters = lora.init_adapters(CFG, SPEC, jax.random.PRNGKey(0))["layers"]
    assert set(adapters) == set(lora.TARGETS)
    for name, ad in adapters.items():
        fan_in = np.prod(ad["a"].shape[1:-1])
        a = np.asarray(ad["a"])
        assert a.dtype == np.float32 and np.abs(a).max() <= 1 / np.sqrt(fan_in)
        assert np.abs(a).max() > 0.9 / np.sqrt(fan_in)  # uniform over the whole bound, not a narrower law
        assert not np.asarray(ad["b"]).any()
    base = init_params(CFG, jax.random.PRNGKey(0))
    merged = lora.merge(base, {"layers": adapters}, SPEC)
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(merged)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_targets_limit_the_adapters_and_the_base_is_not_trained():
    spec = lora.LoraSpec(rank=2, alpha=2.0, targets=("wq", "w_down"))
    base = init_params(CFG, jax.random.PRNGKey(0))
    adapters = random_adapters(spec=spec)
    assert set(adapters["layers"]) == {"wq", "w_down"}
    new, metrics, base_after = lora_step(base, adapters, make_batch(), optax.sgd(0.1), mesh_of(2), spec=spec)
    assert float(metrics["grad_norm"]) > 0
    for before, after in zip(jax.tree.leaves(base), jax.tree.leaves(base_after)):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))  # frozen, not donated
    assert any(not np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(adapters), jax.tree.leaves(new)))


class LossCfg:
    agg, clip_eps_low, clip_eps_high, clip_ratio_c = "token_mean", 0.2, 0.2, None
    beta, max_completion_length = 0.0, 7
    importance_sampling_level, tis_cap, top_entropy_quantile = "token", None, 1.0


VARIANTS = {
    "seq_mean_token_mean": {"agg": "seq_mean_token_mean"},
    "dr_grpo_sum_norm": {"agg": "seq_mean_token_sum_norm"},
    "gspo_sequence": {"importance_sampling_level": "sequence"},
    "gspo_sequence_token": {"importance_sampling_level": "sequence_token"},
    "dual_clip": {"clip_ratio_c": 3.0},
    "tis": {"tis_cap": 2.0},
    "top_entropy": {"top_entropy_quantile": 0.5},
    "kl_to_base": {"beta": 0.05},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_loss_variant_runs_a_lora_step_on_two_devices(variant):
    loss_cfg = type("C", (LossCfg,), VARIANTS[variant])
    batch = make_batch()
    if variant == "tis":
        batch["sampler_logps_bt"] = np.full_like(batch["completion_mask_bt"], -1.0)
    base = init_params(CFG, jax.random.PRNGKey(0))
    new, metrics, _ = lora_step(base, random_adapters(), batch, optax.adamw(1e-3), mesh_of(2), loss_cfg,
                                micro_batches=2, ppo_epochs=2)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    if variant == "kl_to_base":
        assert float(metrics["kl"]) > 0  # random B: the policy differs from the base, its reference


def test_every_estimator_and_dropout_run_lora_steps_on_two_devices():
    spec = dataclasses.replace(SPEC, dropout=0.3)
    mesh = mesh_of(2)
    trainer = Trainer(CFG, optax.adamw(1e-3), LossCfg, mesh=mesh, lora=spec, micro_batches=2, dropout_seed=7)
    base, adapters = sharded(init_params(CFG, jax.random.PRNGKey(0)), random_adapters(), mesh, spec)
    opt_state = trainer.init_opt_state(adapters)
    rewards = np.random.default_rng(0).integers(0, 2, B).astype(np.float32)
    for name in sorted(ADVANTAGE_ESTIMATORS):
        batch = dict(make_batch(), advantages_b=compute_advantages(name, rewards, 4)[0])
        adapters, opt_state, metrics = trainer.step(adapters, opt_state, trainer.shard_batch(batch), base)
        assert np.isfinite(float(metrics["loss"])), name
    # Dropout masks come from the seed and the batch: the same step again gives the same update.
    dropped = Trainer(CFG, optax.sgd(1.0), LossCfg, mesh=mesh, lora=spec, dropout_seed=7)
    base, fresh = sharded(init_params(CFG, jax.random.PRNGKey(0)), random_adapters(), mesh, spec)
    outs = [jax.tree.map(np.asarray, dropped.step(jax.tree.map(jnp.copy, fresh), dropped.init_opt_state(fresh),
                                                  dropped.shard_batch(make_batch()), base)[0]) for _ in range(2)]
    no_drop = Trainer(CFG, optax.sgd(1.0), LossCfg, mesh=mesh, lora=SPEC)
    plain = jax.tree.map(np.asarray, no_drop.step(jax.tree.map(jnp.copy, fresh), no_drop.init_opt_state(fresh),
                                                  no_drop.shard_batch(make_batch()), base)[0])
    for a, b, c in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, c) for a, c in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(plain)))
