"""The sharded GRPO update: invariance to micro-batches and devices, masks, log-probs."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grpo_core.loss import policy_loss
from grpo_core.models.config import PRESETS
from grpo_core.models.decoder import forward, init_params, param_logical_axes
from grpo_core.sharding import make_mesh, shard_params
from grpo_core.train_step import Trainer, sequence_logps

CFG = PRESETS["tiny-llama"]
B, PROMPT, COMPLETION = 16, 5, 7
T = PROMPT + COMPLETION
TOL = 1e-5          # float32 sums in a different order; observed differences are ~1e-7


def make_batch(seed=0) -> dict:
    """Left-padded prompts, completions of varying length (so per-micro-batch token
    counts differ and a per-micro-batch normaliser would change the update)."""
    rng = np.random.default_rng(seed)
    prompt_len = rng.integers(2, PROMPT + 1, B)
    completion_len = rng.integers(1, COMPLETION + 1, B)
    attn = np.zeros((B, T), bool)
    completion = np.zeros((B, T), np.float32)
    for b in range(B):
        attn[b, PROMPT - prompt_len[b]:PROMPT + completion_len[b]] = True
        completion[b, PROMPT:PROMPT + completion_len[b]] = 1.0
    tokens = np.where(attn, rng.integers(3, CFG.vocab_size, (B, T)), CFG.pad_token_id)
    positions = np.maximum(np.cumsum(attn, axis=1) - 1, 0)
    return {"tokens_bt": tokens.astype(np.int32), "positions_bt": positions.astype(np.int32),
            "attn_mask_bt": attn, "completion_mask_bt": completion,
            "advantages_b": rng.normal(size=B).astype(np.float32)}


@functools.lru_cache(maxsize=2)
def initial_params(seed: int) -> dict:
    """Host copy of the tiny model's init (eager init is slow; build it once)."""
    return jax.tree.map(np.asarray, init_params(CFG, jax.random.PRNGKey(seed)))


def mesh_of(n_devices):
    return make_mesh({"dp": 1, "fsdp": n_devices, "tp": 1}, devices=jax.devices()[:n_devices])


def run_step(optimizer, *, n_devices=1, micro_batches=1, batch=None, loss_cfg=None,
             ref=False, **kw):
    """(initial params as numpy, updated params as numpy, metrics) for one step."""
    mesh = mesh_of(n_devices)
    params = shard_params(initial_params(0), param_logical_axes(CFG), mesh)
    trainer = Trainer(CFG, optimizer, loss_cfg, mesh=mesh, micro_batches=micro_batches, **kw)
    ref_params = shard_params(initial_params(1), param_logical_axes(CFG), mesh) if ref else None
    opt_state = trainer.init_opt_state(params)
    sharded = trainer.shard_batch(batch if batch is not None else make_batch())
    new_params, opt_state, metrics = trainer.step(params, opt_state, sharded, ref_params)
    # Donation: the step consumed the input buffers.
    assert params["embed"].is_deleted() and not new_params["embed"].is_deleted()
    return initial_params(0), jax.tree.map(np.asarray, new_params), metrics


def max_abs_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class LossCfg:
    agg, clip_eps_low, clip_eps_high, clip_ratio_c = "token_mean", 0.2, 0.2, None
    beta, max_completion_length = 0.0, None


@pytest.mark.parametrize("agg, splits", [
    ("token_mean", [(1, 2), (1, 4), (8, 2)]),
    ("seq_mean_token_sum_norm", [(8, 2)]),
])
def test_micro_batches_and_devices_give_the_same_update(agg, splits):
    cfg = type("C", (LossCfg,), {"agg": agg, "max_completion_length": COMPLETION})
    before, reference, _ = run_step(optax.sgd(1.0), loss_cfg=cfg)
    assert max_abs_diff(before, reference) > 1e-3            # the update is not trivial
    for n_devices, micro in splits:
        _, updated, _ = run_step(optax.sgd(1.0), n_devices=n_devices, micro_batches=micro,
                                 loss_cfg=cfg)
        assert max_abs_diff(updated, reference) < TOL, (n_devices, micro)


def test_ppo_epochs_with_kl_are_micro_batch_invariant():
    cfg = type("C", (LossCfg,), {"agg": "seq_mean_token_mean", "beta": 0.5,
                                  "clip_eps_low": 0.01, "clip_eps_high": 0.01})
    kw = dict(ppo_epochs=2, loss_cfg=cfg, ref=True)
    _, reference, m1 = run_step(optax.sgd(1.0), **kw)
    _, updated, m4 = run_step(optax.sgd(1.0), micro_batches=4, **kw)
    assert max_abs_diff(updated, reference) < TOL
    for key in ("loss", "kl", "clip_frac_high", "ratio_mean", "entropy", "grad_norm"):
        assert float(m4[key]) == pytest.approx(float(m1[key]), rel=1e-4, abs=1e-6), key
    # Later epochs move away from the rollout policy, so the small clip binds somewhere.
    assert float(m1["clip_frac_low"]) + float(m1["clip_frac_high"]) > 0
    assert float(m1["kl"]) > 0


def test_large_learning_rate_changes_every_parameter():
    before, after, _ = run_step(optax.adam(1e-2))
    for path, old in jax.tree_util.tree_leaves_with_path(before):
        new = _get(after, path)
        assert np.all(new != old), jax.tree_util.keystr(path)


def _get(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def test_all_masked_completions_change_nothing():
    batch = make_batch()
    batch["completion_mask_bt"] = np.zeros_like(batch["completion_mask_bt"])
    before, after, metrics = run_step(optax.adam(1e-2), batch=batch, micro_batches=2)
    assert float(metrics["loss"]) == 0.0 and float(metrics["tokens"]) == 0.0
    assert max_abs_diff(before, after) == 0.0


def test_first_epoch_matches_direct_loss_and_metrics_are_device_scalars():
    batch = make_batch()

    @jax.jit
    def direct_loss(params, batch):
        logps, _ = sequence_logps(params, batch, CFG, 0.7)
        return policy_loss(logps, logps, batch["advantages_b"], batch["completion_mask_bt"])[0]

    expected = direct_loss(initial_params(0), batch)
    mask = batch["completion_mask_bt"]
    _, _, metrics = run_step(optax.sgd(0.0), micro_batches=2, temperature=0.7)
    assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
    assert float(metrics["ratio_mean"]) == pytest.approx(1.0)
    assert float(metrics["clip_frac_low"]) == 0.0 and float(metrics["clip_frac_high"]) == 0.0
    assert float(metrics["tokens"]) == float(mask.sum())
    assert all(isinstance(v, jax.Array) and v.shape == () for v in metrics.values())


def test_sequence_logps_use_log_softmax_of_logits_over_temperature():
    batch = make_batch()

    @jax.jit
    def both(params, batch):
        logits, _ = forward(params, batch["tokens_bt"], CFG, positions_bt=batch["positions_bt"],
                            attn_mask_bt=batch["attn_mask_bt"])
        return sequence_logps(params, batch, CFG, 0.5, with_entropy=True), logits

    (logps, entropy), logits = both(initial_params(0), batch)
    logp_all = jax.nn.log_softmax(logits / 0.5, axis=-1)
    b, t = 3, PROMPT + 1                         # token t is scored by the logits at t - 1
    token = batch["tokens_bt"][b, t]
    assert float(logps[b, t]) == pytest.approx(float(logp_all[b, t - 1, token]), abs=1e-5)
    expected_entropy = -jnp.sum(jnp.exp(logp_all[b, t - 1]) * logp_all[b, t - 1])
    assert float(entropy[b, t]) == pytest.approx(float(expected_entropy), abs=1e-4)
    assert np.all(np.asarray(logps[:, 0]) == 0.0)


def test_bad_batches_are_rejected():
    trainer = Trainer(CFG, optax.sgd(0.1), mesh=mesh_of(8), micro_batches=4)
    params = initial_params(0)
    with pytest.raises(ValueError, match="multiple of 32"):
        trainer.step(params, None, trainer.shard_batch(make_batch()))
    beta = type("C", (LossCfg,), {"beta": 0.1})
    trainer = Trainer(CFG, optax.sgd(0.1), beta, mesh=mesh_of(1))
    with pytest.raises(ValueError, match="ref_params"):
        trainer.step(params, None, trainer.shard_batch(make_batch()))
    with pytest.raises(ValueError, match="max_completion_length"):
        Trainer(CFG, optax.sgd(0.1), type("C", (LossCfg,), {"agg": "seq_mean_token_sum_norm"}),
                mesh=mesh_of(1))


def test_optimizer_moments_are_sharded_like_params():
    mesh = mesh_of(8)
    params = shard_params(initial_params(0), param_logical_axes(CFG), mesh)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    state = Trainer(CFG, opt, mesh=mesh).init_opt_state(params)
    mu = state[1][0].mu
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        assert _get(mu, path).sharding == leaf.sharding, jax.tree_util.keystr(path)
    assert "fsdp" in str(params["layers"]["w_up"].sharding.spec)   # really sharded


def test_score_last_equals_full_scoring_on_the_completion_columns():
    """Scoring only the last M columns gives the same completion log-probs as scoring all."""
    cfg = PRESETS["tiny-llama"]
    params = init_params(cfg, jax.random.PRNGKey(3))
    tokens = jax.random.randint(jax.random.PRNGKey(4), (3, 13), 3, cfg.vocab_size)
    mask = jnp.ones_like(tokens).at[0, :4].set(0)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    batch = {"tokens_bt": tokens, "positions_bt": positions, "attn_mask_bt": mask}
    full, full_ent = sequence_logps(params, batch, cfg, 0.7, with_entropy=True)
    last, last_ent = sequence_logps(params, batch, cfg, 0.7, with_entropy=True, score_last=5)
    np.testing.assert_allclose(np.asarray(last[:, -5:]), np.asarray(full[:, -5:]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(last_ent[:, -5:]), np.asarray(full_ent[:, -5:]), atol=1e-5)
    assert np.all(np.asarray(last[:, :-5]) == 0)


def test_bfloat16_params_keep_their_dtypes_through_a_step():
    """Optimizer state stays in the params' dtype, so step 2 reuses step 1's compilation."""
    mesh = mesh_of(1)
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), initial_params(0))
    params = shard_params(bf16, param_logical_axes(CFG), mesh)
    trainer = Trainer(CFG, optax.adamw(1e-3), mesh=mesh)
    opt_state = trainer.init_opt_state(params)
    dtypes = [x.dtype for x in jax.tree.leaves((params, opt_state))]
    params, opt_state, _ = trainer.step(params, opt_state, trainer.shard_batch(make_batch()))
    assert [x.dtype for x in jax.tree.leaves((params, opt_state))] == dtypes


def make_group_batch(n: int, seed: int = 0) -> dict:
    """make_batch with groups of n consecutive rows sharing their prompt columns."""
    batch = make_batch(seed)
    for key in ("tokens_bt", "positions_bt", "attn_mask_bt"):
        x = batch[key]
        lead = np.repeat(x[::n, :PROMPT], n, axis=0)
        batch[key] = np.concatenate([lead, x[:, PROMPT:]], axis=1)
    # Completion positions continue from each row's (now shared) prompt length.
    attn = batch["attn_mask_bt"]
    batch["positions_bt"] = np.maximum(np.cumsum(attn, axis=1) - 1, 0).astype(np.int32)
    return batch


@pytest.mark.parametrize("n_devices, micro", [(1, 1), (1, 2), (4, 2), (8, 1)])
def test_shared_prompt_forward_gives_the_same_update(n_devices, micro):
    """Running each group's prompt once (group_size=4) == running it for every row; with
    (4, 2) and (8, 1) a device holds 2 rows of a group, which share one prompt forward."""
    batch = make_group_batch(4)
    kw = dict(n_devices=n_devices, micro_batches=micro, batch=batch, score_last=COMPLETION, loss_cfg=LossCfg)
    before, reference, m_ref = run_step(optax.sgd(1.0), **kw)
    assert max_abs_diff(before, reference) > 1e-3
    _, shared, m_shared = run_step(optax.sgd(1.0), group_size=4, **kw)
    assert max_abs_diff(shared, reference) < TOL
    for key in ("loss", "entropy", "grad_norm"):
        assert float(m_shared[key]) == pytest.approx(float(m_ref[key]), rel=1e-4, abs=1e-6), key


def test_shared_prompt_logps_equal_full_scoring():
    params = init_params(CFG, jax.random.PRNGKey(5))
    batch = {k: jnp.asarray(v) for k, v in make_group_batch(4, seed=2).items()}
    full, _ = sequence_logps(params, batch, CFG, 0.7, score_last=COMPLETION)
    shared, _ = sequence_logps(params, batch, CFG, 0.7, score_last=COMPLETION, group_size=4)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(full), atol=1e-5)


def test_groups_that_do_not_share_a_prompt_are_rejected():
    trainer = Trainer(CFG, optax.sgd(1.0), mesh=mesh_of(1), score_last=COMPLETION, group_size=4)
    with pytest.raises(ValueError, match="differ in their prompt columns"):
        trainer.shard_batch(make_batch(seed=1))  # independent prompts per row
    assert trainer._shared_group(16) == 4 and trainer._shared_group(6) == 2


def test_bs128_on_eight_devices_shares_prompts_within_each_device():
    # The shipped bs128 configs on v6e-8: 16 prompts x 8 = 128 rows over 8 batch shards in 4
    # micro-batches = 4 rows per device per micro-batch, half a group: 4 rows share a prompt
    # forward (before: whole groups only, so no sharing at all on the slice).
    trainer = Trainer(CFG, optax.sgd(1.0), mesh=mesh_of(8), micro_batches=4, score_last=COMPLETION, group_size=8)
    assert trainer._shared_group(128) == 4
    assert Trainer(CFG, optax.sgd(1.0), mesh=mesh_of(8), micro_batches=4, group_size=8)._shared_group(128) == 1
