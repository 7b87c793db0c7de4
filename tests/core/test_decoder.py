"""Decoder: config round trips, shapes/axes, KV-cache consistency, and HF parity (torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpo_core.models import PRESETS, ModelConfig
from grpo_core.models.decoder import (
    forward, init_kv_cache, init_params, param_logical_axes, param_shapes, positions_from_mask,
)
from grpo_core.models.hf_names import hf_state_from_params, params_from_hf_state

TINY = ["tiny-llama", "tiny-qwen2"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_roundtrips_through_hf_dict(name):
    cfg = PRESETS[name]
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg
    hash(cfg)  # static jit argument


def test_preset_parameter_counts_match_published_sizes():
    assert abs(PRESETS["smollm2-135m"].num_params / 1e6 - 134.5) < 0.5
    assert abs(PRESETS["qwen2.5-0.5b"].num_params / 1e9 - 0.494) < 0.005
    assert abs(PRESETS["qwen2.5-7b"].num_params / 1e9 - 7.62) < 0.01


@pytest.mark.parametrize("name", TINY)
def test_params_axes_and_shapes_share_one_tree(name):
    cfg = PRESETS[name]
    params = init_params(cfg, jax.random.key(0))
    shapes, axes = param_shapes(cfg), param_logical_axes(cfg)
    assert jax.tree.structure(params) == jax.tree.structure(shapes, is_leaf=lambda x: isinstance(x, tuple))
    for p, s, a in zip(jax.tree.leaves(params), jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple)),
                       jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))):
        assert p.shape == s and len(a) == len(s)
    assert ("lm_head" in params) == (not cfg.tie_word_embeddings)
    assert ("bq" in params["layers"]) == cfg.attention_bias


@pytest.mark.parametrize("name", TINY)
def test_hf_state_roundtrip(name):
    cfg = PRESETS[name]
    params = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(1)))
    back = params_from_hf_state(cfg, hf_state_from_params(cfg, params).__getitem__)
    jax.tree.map(np.testing.assert_array_equal, params, back)


def _ragged_batch(cfg, lengths, T, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.arange(T)[None, :] >= (T - np.asarray(lengths))[:, None]
    tokens = np.where(mask, rng.integers(3, cfg.vocab_size, (len(lengths), T)), 0)
    return jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)


@pytest.mark.parametrize("name", TINY)
def test_left_padding_and_kv_cache_match_plain_forward(name):
    cfg = PRESETS[name]
    params = init_params(cfg, jax.random.key(2))
    tokens, mask = _ragged_batch(cfg, [9, 4, 7], 9)
    pos = positions_from_mask(mask)
    full, _ = forward(params, tokens, cfg, positions_bt=pos, attn_mask_bt=mask)
    alone, _ = forward(params, tokens[1:2, 5:], cfg, positions_bt=pos[1:2, 5:])
    np.testing.assert_allclose(full[1, 5:], alone[0], atol=1e-5)
    # Prefill 6 tokens into a cache, then feed the last 3 one at a time (both cache layouts).
    for heads_major in (False, True):
        cache = init_kv_cache(cfg, 3, 12, heads_major=heads_major)
        pre, cache = forward(params, tokens[:, :6], cfg, positions_bt=pos[:, :6], attn_mask_bt=mask[:, :6],
                             kv_cache=cache, cache_pos=0, cache_heads_major=heads_major)
        steps = [pre]
        for t in range(6, 9):
            out, cache = forward(params, tokens[:, t:t + 1], cfg, positions_bt=pos[:, t:t + 1],
                                 attn_mask_bt=mask[:, t:t + 1], kv_cache=cache, cache_pos=t,
                                 cache_heads_major=heads_major)
            steps.append(out)
        np.testing.assert_allclose(np.where(mask[..., None], jnp.concatenate(steps, 1), 0),
                                   np.where(mask[..., None], full, 0), atol=1e-5)


def test_remat_and_bfloat16():
    cfg = PRESETS["tiny-qwen2"]
    params = init_params(cfg, jax.random.key(3))
    tokens, mask = _ragged_batch(cfg, [5, 8], 8)
    pos = positions_from_mask(mask)

    def loss(p, remat):
        return jnp.mean(forward(p, tokens, cfg, positions_bt=pos, attn_mask_bt=mask, remat=remat)[0] ** 2)

    g0, g1 = jax.grad(loss)(params, False), jax.grad(loss)(params, True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)
    bf = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    lo_bf, _ = forward(bf, tokens, cfg, positions_bt=pos, attn_mask_bt=mask)
    lo_32, _ = forward(params, tokens, cfg, positions_bt=pos, attn_mask_bt=mask)
    assert lo_bf.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(lo_bf - lo_32))) < 0.05


@pytest.mark.torch
@pytest.mark.parametrize("name", TINY)
def test_logits_match_hf_transformers(name):
    from hf_reference import hf_logits, hf_model, left_pad, model_from_hf

    cfg = PRESETS[name]
    hf = hf_model(cfg)
    model = model_from_hf(cfg, hf)
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, cfg.vocab_size, n)) for n in (11, 3, 7, 1)]
    tokens, mask = left_pad(prompts, cfg.pad_token_id)
    ours = np.asarray(model.logits(tokens, mask))
    ref = hf_logits(hf, tokens, mask)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref)[mask].max() <= 1e-4
    assert np.abs(ref).max() > 1.0  # the random weights give non-trivial logits


def test_swiglu_gradient_matches_autodiff_of_the_plain_expression():
    from grpo_core.models.decoder import swiglu

    gate, up, g = jax.random.normal(jax.random.key(0), (3, 4, 7, 33)) * 4.0  # tails where the sigmoid saturates
    plain = lambda a, b: jnp.sum((jax.nn.silu(a) * b) * g)
    ours = lambda a, b: jnp.sum(swiglu(a, b) * g)
    assert np.allclose(swiglu(gate, up), jax.nn.silu(gate) * up)
    for want, got in zip(jax.grad(plain, (0, 1))(gate, up), jax.grad(ours, (0, 1))(gate, up)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    from jax.test_util import check_grads  # finite differences as a third opinion

    check_grads(swiglu, (gate[0, :2], up[0, :2]), order=1, modes=("rev",), eps=1e-3)


@pytest.mark.parametrize("form", ["_weight_grads_x_transposed", "_weight_grads_einsum"])
def test_gate_up_gradients_match_autodiff_of_the_einsums(form, monkeypatch):
    from grpo_core.models import decoder

    # platform_dependent picks the form for the platform being compiled for: run each form here.
    chosen = getattr(decoder, form)
    monkeypatch.setattr(decoder.jax.lax, "platform_dependent", lambda *args, cpu, default: chosen(*args))
    kx, kg, ku, kdg, kdu = jax.random.split(jax.random.key(1), 5)
    x, w_gate, w_up = jax.random.normal(kx, (3, 5, 8)), jax.random.normal(kg, (8, 12)), jax.random.normal(ku, (8, 12))
    d_gate, d_up = jax.random.normal(kdg, (3, 5, 12)), jax.random.normal(kdu, (3, 5, 12))

    def plain(x, wg, wu):
        return jnp.einsum("btd,df->btf", x, wg), jnp.einsum("btd,df->btf", x, wu)

    outs, want_vjp = jax.vjp(plain, x, w_gate, w_up)
    ours, got_vjp = jax.vjp(decoder.gate_up, x, w_gate, w_up)
    for want, got in zip(outs + want_vjp((d_gate, d_up)), ours + got_vjp((d_gate, d_up))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gate_up_backward_form_follows_the_compiled_platform():
    from grpo_core.models import decoder

    x = jnp.ones((2, 3, 8))
    w = jnp.ones((8, 12))
    loss = lambda x, wg, wu: sum(jnp.sum(y) for y in decoder.gate_up(x, wg, wu))
    grad = jax.jit(jax.grad(loss, (0, 1, 2)))
    assert "optimization_barrier" in grad.lower(x, w, w).as_text()  # this CPU: x transposed once
    # Lowered for another platform, the same function takes the einsum form.
    gpu_text = grad.trace(x, w, w).lower(lowering_platforms=("cuda",)).as_text()
    assert "optimization_barrier" not in gpu_text
