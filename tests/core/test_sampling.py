"""Sampler: distribution of draws, logps = recomputed log-probs, EOS/early exit, no retrace,
mesh invariance, and greedy parity with HF generate (torch)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpo_core.models import PRESETS, Model
from grpo_core.models.decoder import init_params, param_logical_axes
from grpo_core.sampling import TRACE_COUNTS, SamplingSpec, filter_logits, generate, sample_from_logits
from grpo_core.sharding import make_mesh, shard_params

PROMPTS = [[5, 17, 9, 200, 31], [44], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [99, 3]]


@pytest.fixture(scope="module")
def model():
    cfg = PRESETS["tiny-qwen2"]
    params = jax.tree.map(lambda x: 5 * x, init_params(cfg, jax.random.key(0)))  # peaked, non-trivial outputs
    return Model(cfg, params)


def _expected_probs(logits, temperature, top_p, top_k):
    """Reference distribution in numpy: temper, keep top-k, then the smallest nucleus >= top_p."""
    z = np.asarray(logits, np.float64) / temperature
    order = np.argsort(-z)
    keep = np.zeros_like(z, bool)
    keep[order[: top_k or len(z)]] = True
    p = np.where(keep, np.exp(z - z.max()), 0)
    p /= p.sum()
    mass_before = np.cumsum(p[order]) - p[order]
    keep[order[mass_before >= top_p]] = False
    p = np.where(keep, p, 0)
    return p / p.sum()


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, 0), (0.6, 1.0, 3), (1.4, 0.7, 0), (1.0, 0.8, 4)])
def test_draws_follow_tempered_filtered_distribution(temperature, top_p, top_k):
    logits = jnp.array([2.0, 1.5, 1.0, 0.4, 0.0, -0.5, -1.0, -3.0])
    draws = 40000
    spec = SamplingSpec(max_new_tokens=1, temperature=temperature, top_p=top_p, top_k=top_k)
    tokens, logps = jax.jit(sample_from_logits, static_argnums=2)(
        jnp.broadcast_to(logits, (draws, 8)), jax.random.key(1), spec)
    expected = _expected_probs(logits, temperature, top_p, top_k)
    counts = np.bincount(np.asarray(tokens), minlength=8)
    assert counts[expected == 0].sum() == 0  # filtered tokens never drawn
    live = expected > 0
    chi2 = (((counts - draws * expected)[live]) ** 2 / (draws * expected[live])).sum()
    df = live.sum() - 1
    assert chi2 < df + 6 * np.sqrt(2 * max(df, 1)) + 6  # ~4 sigma above the chi-square mean
    ref = jax.nn.log_softmax(logits / temperature)[np.asarray(tokens)]
    np.testing.assert_allclose(np.asarray(logps), np.asarray(ref), atol=1e-6)  # BEFORE truncation


def test_two_level_draw_over_many_blocks_follows_the_weights():
    # 1000 tokens = 7 full blocks of 128 and a partial one; one whole block and scattered
    # tokens have zero weight and must never be drawn.
    from grpo_core.sampling import _categorical

    rng = np.random.default_rng(0)
    w = rng.gamma(0.5, size=1000) * (rng.random(1000) > 0.2)
    w[256:384] = 0.0
    w[999] = 3.0  # the padded last block
    draws = 200000
    tokens = np.asarray(jax.jit(_categorical)(jnp.broadcast_to(jnp.asarray(w, jnp.float32), (draws, 1000)),
                                              jax.random.key(2)))
    counts = np.bincount(tokens, minlength=1000)
    assert counts[w == 0].sum() == 0
    expected = draws * w / w.sum()
    big = expected > 20  # chi-square over the well-populated tokens, the rest pooled
    chi2 = ((counts[big] - expected[big]) ** 2 / expected[big]).sum()
    rest = expected[~big & (w > 0)].sum()
    chi2 += (counts[~big & (w > 0)].sum() - rest) ** 2 / rest
    df = big.sum()
    assert chi2 < df + 6 * np.sqrt(2 * df) + 6, (chi2, df)


def test_filter_logits_keeps_at_least_the_top_token():
    x = jnp.array([[5.0, 0.0, -1.0]])
    assert np.isfinite(np.asarray(filter_logits(x, 0.01, 0))).sum() == 1
    assert np.isfinite(np.asarray(filter_logits(x, 1.0, 2))).sum() == 2


def test_first_token_end_to_end_distribution(model):
    logits = np.asarray(model.logits([PROMPTS[0]]))[0, -1]
    n = 3000
    res = generate(model, [PROMPTS[0]], 1, temperature=1.5, top_k=5, seed=3, n=n)
    expected = _expected_probs(logits, 1.5, 1.0, 5)
    counts = np.bincount(res.tokens_bt[:, 0], minlength=len(expected))
    assert counts[expected == 0].sum() == 0
    chi2 = ((counts - n * expected)[expected > 0] ** 2 / (n * expected[expected > 0])).sum()
    assert chi2 < 4 + 6 * np.sqrt(8) + 6


def _recomputed_logps(model, prompts, res, n, temperature):
    """log_softmax(logits / T) of each sampled token from one full forward pass per row."""
    out = []
    for row, completion in enumerate(res.tokens):
        seq = prompts[row // n] + completion
        logits = np.asarray(model.logits([seq]))[0]
        lp = jax.nn.log_softmax(logits / temperature, axis=-1)
        start = len(prompts[row // n])
        out.append(np.asarray(lp)[np.arange(start - 1, len(seq) - 1), completion])
    return out


def test_logps_equal_forward_recompute(model):
    res = generate(model, PROMPTS, 8, temperature=0.7, top_p=0.9, top_k=20, seed=5, n=2, stop_at_eos=False)
    assert len(res.tokens) == 8 and res.tokens_bt.shape == (8, 8)
    assert res.tokens[0] != res.tokens[1]  # the two samples of a group differ
    for got, ref in zip(res.logps, _recomputed_logps(model, PROMPTS, res, 2, 0.7)):
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_eos_finish_reason_and_early_exit(model):
    greedy = generate(model, [PROMPTS[0]], 8, temperature=0.0, stop_at_eos=False)
    assert greedy.finish_reason == ["length"] and greedy.num_steps == 8
    stop_tok = greedy.tokens[0][2]
    first = greedy.tokens[0].index(stop_tok)
    eos_model = Model(dataclasses.replace(model.config, eos_token_ids=(stop_tok,)), model.params)
    res = generate(eos_model, [PROMPTS[0]] * 2, 8, temperature=0.0, n=2)
    assert res.finish_reason == ["eos"] * 4
    assert res.tokens == [greedy.tokens[0][: first + 1]] * 4
    assert res.num_steps == first + 1 < 8  # the loop stopped once every row ended
    assert res.mask_bt.sum(1).tolist() == [first + 1] * 4
    assert (res.tokens_bt[:, first + 1:] == eos_model.pad_token_id).all()
    assert (res.logps_bt[~res.mask_bt] == 0).all()


def test_second_call_in_same_bucket_does_not_retrace(model):
    kwargs = dict(temperature=0.7, top_p=0.9, top_k=20, n=2, stop_at_eos=False)  # as in the logps test
    generate(model, PROMPTS, 8, seed=0, **kwargs)
    before = TRACE_COUNTS["generate"]
    # 3 prompts of at most 12 tokens: same buckets (4 rows, 16 prompt slots) as PROMPTS.
    res = generate(model, [[1, 2, 3], list(range(30, 42)), [11]], 8, seed=9, **kwargs)
    assert TRACE_COUNTS["generate"] == before and len(res.tokens) == 6


@pytest.mark.parametrize("shape", [None, {"dp": 8}])
def test_unrolled_decode_matches_layer_scan(model, shape):
    """Every decode path (layer scan or per-layer; cache [B, S, Nkv, Hd] or heads major)
    gives the same samples and logps."""
    mesh = make_mesh(shape)
    sharded = Model(model.config, shard_params(model.params, param_logical_axes(model.config), mesh))
    kwargs = dict(temperature=0.7, top_p=0.9, top_k=20, seed=3, n=2, stop_at_eos=False)
    scan = generate(sharded, PROMPTS, 8, unroll_layers=False, heads_major=False, **kwargs)  # the TPU path
    for unroll, heads_major in ((True, False), (False, True), (True, True)):
        other = generate(sharded, PROMPTS, 8, unroll_layers=unroll, heads_major=heads_major, **kwargs)
        assert other.tokens == scan.tokens, (unroll, heads_major)
        np.testing.assert_allclose(other.logps_bt, scan.logps_bt, atol=1e-4)  # float32 sums in another order
    unrolled = other
    for got, ref in zip(unrolled.logps, _recomputed_logps(model, PROMPTS, unrolled, 2, 0.7)):
        np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("shape", [None, {"dp": 2, "fsdp": 2, "tp": 2}])
def test_mesh_generate_matches_single_device(model, shape):
    ref = generate(model, PROMPTS, 8, temperature=0.0, n=2)
    mesh = make_mesh(shape)
    sharded = Model(model.config, shard_params(model.params, param_logical_axes(model.config), mesh))
    out = generate(sharded, PROMPTS, 8, temperature=0.0, n=2)
    assert out.tokens == ref.tokens
    np.testing.assert_allclose(out.logps_bt, ref.logps_bt, atol=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_greedy_matches_hf_generate(name):
    import torch
    from hf_reference import hf_model, left_pad, model_from_hf

    cfg = PRESETS[name]
    hf = hf_model(cfg)
    ours = model_from_hf(cfg, hf)
    tokens, mask = left_pad(PROMPTS, cfg.pad_token_id)
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                          max_new_tokens=12, do_sample=False, eos_token_id=list(cfg.eos_token_ids),
                          pad_token_id=cfg.pad_token_id)
    res = generate(ours, PROMPTS, 12, temperature=0.0)
    for row, got in zip(out[:, tokens.shape[1]:].tolist(), res.tokens):
        ends = [i for i, t in enumerate(row) if t in cfg.eos_token_ids]
        assert got == row[: ends[0] + 1 if ends else len(row)]


def test_cpu_sampler_programs_use_xla_dots_not_ynnpack_fusions(model):
    """The sampler compiled for CPU devices that decode 8 rows or more drops the YNNPACK dot
    fusions (faster decode on AVX2 hosts, benchmarks/RESULTS.md); the option follows the mesh's platform, so a TPU
    program (grpo preflight --compile) is compiled with XLA:TPU's defaults."""
    from grpo_core.sampling import _generate_jit, generate_inputs, sampler_program

    tokens, mask, spec, mesh = generate_inputs(model, [[3, 4, 5]] * 8, 8)

    def compiled_text(program):
        return program.lower(model.params, tokens, mask, np.uint32(0), cfg=model.config, spec=spec,
                             mesh=mesh).compile().as_text()

    assert "__ynn_fusion" in compiled_text(_generate_jit)  # the default CPU compile has them
    assert "__ynn_fusion" not in compiled_text(sampler_program(mesh, 8))
    assert sampler_program(mesh, 2) is _generate_jit  # 2 rows: the YNNPACK fusions were faster
