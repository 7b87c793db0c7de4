"""Jitted KV-cache generation: one prefill, then a `lax.while_loop` decode.

Shape of a call: P prompts, n samples each, M = max_new_tokens. Prompts are left-padded
to a bucketed length Tp and the prompt batch is padded to a bucketed size, so repeated
calls reuse one compilation (the jitted function is module-level, keyed on the static
config). Each prompt is prefilled ONCE into a [L, P, Tp, Nkv, Hd] cache, which is then
repeated n times into the decode cache [L, P*n, Tp+M, Nkv, Hd] (group-contiguous rows:
prompt i sample j is row i*n+j). The decode loop stops as soon as every row has emitted
an EOS (or at M tokens).

Log-probs: `logps` holds log_softmax(logits / temperature) of the sampled token, i.e. the
tempered distribution BEFORE top-k/top-p truncation; that is what the trainer recomputes
from a forward pass. With temperature 0 (greedy) it is log_softmax(logits) (temperature 1).
"""
from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from grpo_core.errors import UserError
from grpo_core.models.decoder import (
    KVCache, decode_step, forward, kv_cache_axes, logits_from_hidden, positions_from_mask,
    split_layers,
)
from grpo_core.sharding import batch_shards, batch_sharding, constrain, fetch_global, put_global, replicated

# Incremented each time the generate function is traced (compiled); tests assert reuse.
TRACE_COUNTS: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """Static (compile-time) sampling settings; hashable so it keys the jit cache."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop_at_eos: bool = True
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0
    unroll_layers: bool = False  # decode through per-layer weight copies (see `_unroll_layers`)
    heads_major: bool = False  # decode cache [.., B, Nkv, S, Hd] (see `_heads_major`)


@dataclasses.dataclass
class GenerationResult:
    """Completions for P prompts * n samples, row i*n+j = prompt i, sample j.

    tokens / logps: per-row lists (completion only, EOS included when it ended the row).
    finish_reason: "eos" | "length" per row. Padded views for the trainer (M = max_new_tokens):
    tokens_bt [N, M] int32 (pad id after the end), logps_bt [N, M] float32 (0 after the end),
    mask_bt [N, M] bool (True on completion tokens), lengths [N] int32. num_steps: tokens
    generated per row before the loop stopped (< M when every row hit EOS early).
    """

    tokens: list[list[int]]
    logps: list[list[float]]
    finish_reason: list[str]
    tokens_bt: np.ndarray
    logps_bt: np.ndarray
    mask_bt: np.ndarray
    lengths: np.ndarray
    num_steps: int


def filter_logits(x_bv: jax.Array, top_p: float, top_k: int) -> jax.Array:
    """Set logits outside the top-k / nucleus (top-p) set to -inf. x_bv: [B, V] float32.

    Nucleus: keep the most likely tokens until their mass reaches top_p (the token that
    crosses top_p is kept, so at least one token always survives).
    """
    if top_k > 0:
        sorted_bk = jax.lax.top_k(x_bv, min(top_k, x_bv.shape[-1]))[0]
        x_bv = jnp.where(x_bv < sorted_bk[:, -1:], -jnp.inf, x_bv)
    if top_p < 1.0:
        sorted_bk = sorted_bk if top_k > 0 else -jnp.sort(-x_bv, axis=-1)
        probs = jax.nn.softmax(sorted_bk, axis=-1)
        keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
        threshold = jnp.min(jnp.where(keep, sorted_bk, jnp.inf), axis=-1, keepdims=True)
        x_bv = jnp.where(x_bv < threshold, -jnp.inf, x_bv)
    return x_bv


def _first_argmax(x_bv: jax.Array) -> jax.Array:
    """argmax over the last axis (first index on ties) as two plain reductions: XLA's CPU
    backend runs jnp.argmax's (value, index) reduction several times slower per token."""
    top = jnp.max(x_bv, axis=-1, keepdims=True)
    index = jnp.arange(x_bv.shape[-1], dtype=jnp.int32)
    first = jnp.min(jnp.where(x_bv == top, index, x_bv.shape[-1]), axis=-1)
    return jnp.minimum(first, x_bv.shape[-1] - 1).astype(jnp.int32)  # a NaN row still yields a valid id


_BLOCK = 128  # vocabulary block of the two-level inverse-CDF draw (`_categorical`)


def _inverse_cdf(w_bn: jax.Array, u_b: jax.Array) -> jax.Array:
    """Per row, the index i with C[i-1] <= u * C[-1] < C[i], C = cumsum(w): an index drawn
    with probability w_i / sum(w). w_bn >= 0 [B, n]; u_b uniform in [0, 1) [B]. Never an
    index of zero weight (a rounding overshoot falls back to the last positive one)."""
    n = w_bn.shape[-1]
    upper = jnp.triu(jnp.ones((n, n), w_bn.dtype))  # inclusive cumsum as one small matmul
    c = jnp.dot(w_bn, upper, precision=jax.lax.Precision.HIGHEST)
    i = jnp.sum(c <= u_b[:, None] * c[:, -1:], axis=-1).astype(jnp.int32)
    last_positive = jnp.max(jnp.where(w_bn > 0, jnp.arange(n, dtype=jnp.int32), 0), axis=-1)
    return jnp.minimum(i, last_positive)


def _categorical(e_bv: jax.Array, key: jax.Array) -> jax.Array:
    """One draw per row with probability e / sum(e) (e_bv: unnormalised weights >= 0, [B, V]).

    Inverse CDF in two levels: a block of `_BLOCK` tokens by the blocks' masses, then a
    token inside it. Two uniforms per row instead of the Gumbel-max trick's V Gumbel
    variates (two logs each, a visible share of a CPU decode step at a 49,152-token vocabulary).
    """
    B, V = e_bv.shape
    size = min(_BLOCK, V)
    blocks = -(-V // size)
    e = jnp.pad(e_bv, ((0, 0), (0, blocks * size - V))).reshape(B, blocks, size)
    k_block, k_token = jax.random.split(key)
    block = _inverse_cdf(e.sum(-1), jax.random.uniform(k_block, (B,), jnp.float32))
    inside = jnp.take_along_axis(e, block[:, None, None], axis=1)[:, 0]
    token = block * size + _inverse_cdf(inside, jax.random.uniform(k_token, (B,), jnp.float32))
    return jnp.minimum(token, V - 1)


def sample_from_logits(logits_bv: jax.Array, key: jax.Array, spec: SamplingSpec):
    """Draw one token per row. logits_bv: [B, V] float32 -> (tokens [B] int32, logps [B] float32)."""
    scaled = logits_bv if spec.temperature == 0.0 else logits_bv / spec.temperature
    top = jnp.max(scaled, axis=-1, keepdims=True)
    e = jnp.exp(scaled - top)  # shared by the draw and the log-probs
    log_z = jnp.log(jnp.sum(e, axis=-1)) + top[:, 0]
    if spec.temperature == 0.0:
        tokens = _first_argmax(scaled)
    else:
        if spec.top_p < 1.0 or spec.top_k > 0:
            e = jnp.where(filter_logits(scaled, spec.top_p, spec.top_k) == -jnp.inf, 0.0, e)
        tokens = _categorical(e, key)
    return tokens, jnp.take_along_axis(scaled, tokens[:, None], axis=-1)[:, 0] - log_z


def _prefill(params, tokens_pt, mask_pt, cfg, spec: SamplingSpec, mesh):
    """Prefill P prompts once, then repeat their keys/values n times into the decode cache.

    Returns (last-position logits [P*n, V], cache with B = P*n rows and S = Tp + M slots):
    a KVCache [L, ...] for the layer scan, or ([(k, v) per layer], mask) when the decode is
    unrolled over layers. Only the last position goes through the LM head: [P, Tp, V]
    logits would dwarf the cache.
    """
    P, Tp = tokens_pt.shape
    N, S = P * spec.n, Tp + spec.max_new_tokens
    dtype = params["embed"].dtype
    h, (k, v) = forward(params, tokens_pt, cfg, positions_bt=positions_from_mask(mask_pt), attn_mask_bt=mask_pt,
                        return_hidden=True, return_kv=True, mesh=mesh)
    last = jnp.repeat(logits_from_hidden(params, h[:, -1:], cfg)[:, 0], spec.n, axis=0)
    mask = jnp.zeros((N, S), bool).at[:, :Tp].set(jnp.repeat(mask_pt.astype(bool), spec.n, axis=0))

    def fill(x):  # [..., P, Tp, Nkv, Hd] -> [..., N, S, Nkv, Hd] (or [..., N, Nkv, S, Hd]), prompt slots first
        x = jnp.repeat(x.astype(dtype), spec.n, axis=-4)
        if spec.heads_major:
            x = jnp.swapaxes(x, -3, -2)
            return jnp.zeros(x.shape[:-4] + (N, x.shape[-3], S, x.shape[-1]), dtype).at[..., :Tp, :].set(x)
        return jnp.zeros(x.shape[:-4] + (N, S) + x.shape[-2:], dtype).at[..., :Tp, :, :].set(x)

    axes = kv_cache_axes(spec.heads_major)
    if spec.unroll_layers:
        caches = [constrain((fill(k[i]), fill(v[i])), (axes.k[1:], axes.v[1:]), mesh)
                  for i in range(cfg.num_hidden_layers)]
        return last, (caches, mask)
    return last, constrain(KVCache(fill(k), fill(v), mask), axes, mesh)


def _is_eos(tokens_b, spec: SamplingSpec):
    if not spec.stop_at_eos or not spec.eos_ids:
        return jnp.zeros(tokens_b.shape, bool)
    return jnp.isin(tokens_b, jnp.asarray(spec.eos_ids, jnp.int32))


def _generate_impl(params, tokens_pt, mask_pt, seed, cfg, spec: SamplingSpec, mesh):
    """Traced body of `generate`: returns (tokens [N, M], logps [N, M], lengths [N], steps)."""
    TRACE_COUNTS["generate"] += 1
    key = jax.random.key(seed)
    P, Tp = tokens_pt.shape
    N, M = P * spec.n, spec.max_new_tokens
    last, cache = _prefill(params, tokens_pt, mask_pt, cfg, spec, mesh)
    plen = jnp.repeat(mask_pt.sum(-1).astype(jnp.int32), spec.n)
    tok, lp = sample_from_logits(last, jax.random.fold_in(key, 0), spec)
    done = _is_eos(tok, spec) | (plen == 0)  # bucket-padding rows start finished
    out_tok = jnp.full((N, M), spec.pad_id, jnp.int32).at[:, 0].set(tok)
    out_lp = jnp.zeros((N, M), jnp.float32).at[:, 0].set(lp)
    lengths = jnp.where(plen > 0, 1, 0).astype(jnp.int32)

    def cond(state):
        i, _, _, done, *_ = state
        return (i < M) & ~jnp.all(done)

    if spec.unroll_layers:
        layer_params = split_layers(params["layers"])

    def step(cache, tok, i):
        if spec.unroll_layers:
            caches, mask = cache
            logits, caches, mask = decode_step(params, layer_params, tok[:, None], cfg,
                                               positions_b1=(plen + i - 1)[:, None], caches=caches,
                                               cache_mask_bs=mask, cache_pos=Tp + i - 1,
                                               heads_major=spec.heads_major, mesh=mesh)
            return logits, (caches, mask)
        return forward(params, tok[:, None], cfg, positions_bt=(plen + i - 1)[:, None],
                       kv_cache=cache, cache_pos=Tp + i - 1, cache_heads_major=spec.heads_major, mesh=mesh)

    def body(state):
        i, cache, tok, done, out_tok, out_lp, lengths = state
        logits, cache = step(cache, tok, i)
        new, lp = sample_from_logits(logits[:, 0], jax.random.fold_in(key, i), spec)
        new, lp = jnp.where(done, spec.pad_id, new), jnp.where(done, 0.0, lp)
        out_tok = jax.lax.dynamic_update_slice(out_tok, new[:, None], (0, i))
        out_lp = jax.lax.dynamic_update_slice(out_lp, lp[:, None], (0, i))
        lengths = jnp.where(done, lengths, i + 1)
        return i + 1, cache, new, done | _is_eos(new, spec), out_tok, out_lp, lengths

    state = (jnp.int32(1), cache, tok, done, out_tok, out_lp, lengths)
    steps, _, _, _, out_tok, out_lp, lengths = jax.lax.while_loop(cond, body, state)
    return out_tok, out_lp, lengths, steps


_generate_jit = jax.jit(_generate_impl, static_argnames=("cfg", "spec", "mesh"))
# XLA:CPU's own dot emitter instead of its YNNPACK fusions, for sampler programs compiled for
# CPU devices that decode at least CPU_XLA_DOTS_MIN_ROWS rows per batch shard: at 8 rows and
# more the emitter's matrix-vector dots make a decode step faster on AVX2-only hosts and
# cost nothing on AVX-512 ones, while at a few rows YNNPACK's are much faster
# (benchmarks/RESULTS.md, "Rollout on CPU: the dot emitter"). The update keeps the default.
CPU_SAMPLER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
CPU_XLA_DOTS_MIN_ROWS = 8
_generate_jit_cpu = jax.jit(_generate_impl, static_argnames=("cfg", "spec", "mesh"),
                            compiler_options=CPU_SAMPLER_OPTIONS)


def sampler_program(mesh, rows: int, n: int = 1):
    """The jitted sampler for the platform of the devices it runs on (`mesh`) and the rows it
    decodes (`rows` prompt rows x `n` samples, over the mesh's batch shards)."""
    per_shard = rows * n // batch_shards(mesh)
    return _generate_jit_cpu if _platforms(mesh) == {"cpu"} and per_shard >= CPU_XLA_DOTS_MIN_ROWS else _generate_jit


def prompt_slots(longest_prompt: int) -> int:
    """Prompt width (cache slots, update columns) for prompts of up to `longest_prompt` tokens:
    a power of two up to 64, then four widths per doubling (80, 96, 112, 128, 160, 192, 224,
    256, 320, ...). The prefill, every decode step and the update pay for the empty slots,
    at most 25% past 64 (a 75-token prompt takes 80); each new width is a new program to
    compile (minutes on TPU), and a run's batches, whose longest prompt sits near the top of
    the length distribution, meet few of them: 3 in 100 steps of GSM8K-length prompts
    (100-250 tokens) cut at max_prompt_tokens=256 (tests/core/test_buckets.py)."""
    if longest_prompt <= 64:
        return bucket(longest_prompt, 8)
    step = 1 << ((longest_prompt - 1).bit_length() - 3)
    return -(-longest_prompt // step) * step


def bucket(x: int, minimum: int = 1) -> int:
    """Round a size up to a power of two (multiples of 256 past 256) so shapes repeat across calls."""
    b = max(minimum, 1 << max(x - 1, 0).bit_length())
    return b if b <= 256 else -(-x // 256) * 256


def _left_pad(prompts: list[list[int]], rows: int, width: int, pad_id: int):
    """[rows, width] int32 tokens and bool mask; prompts right-aligned, extra rows empty."""
    tokens = np.full((rows, width), pad_id, np.int32)
    mask = np.zeros((rows, width), bool)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = p
        mask[i, width - len(p):] = True
    return tokens, mask


def _platforms(mesh) -> set[str]:
    """Platforms of the devices the sampler runs on (the default device without a mesh)."""
    return {d.platform for d in (mesh.devices.flat if mesh is not None else jax.devices()[:1])}


def _unroll_layers(mesh) -> bool:
    """Default decode path: per-layer weight copies on GPU when the weights are whole per device.

    On GPU a scan over stacked layers copies every weight matrix out of the stack (a device
    memcpy per matrix per layer per token: a third of the decode time in the H100 profile
    in benchmarks/RESULTS.md) and launches each layer separately; per-layer copies made once
    per call avoid both. On CPU the unrolled step measured no faster, and when params are
    split over fsdp/tp (TPU slices) per-layer copies would hold the whole gathered model,
    so both keep the layer scan.
    """
    if _platforms(mesh) != {"gpu"}:
        return False
    return mesh is None or mesh.shape.get("fsdp", 1) * mesh.shape.get("tp", 1) == 1


def _heads_major(mesh) -> bool:
    """Decode cache layout: [.., B, Nkv, S, Hd] except on TPU.

    A decode step's attention multiplies by the cache along S per kv head; with the
    [B, S, Nkv, Hd] layout XLA's CPU backend transposes every layer's cache slice every
    token (a quarter of the CPU decode time in the profile in benchmarks/RESULTS.md).
    On TPU the [B, S, Nkv, Hd] logical layout stays: XLA:TPU already stores the cache as
    [.., B, Nkv, S, Hd] physically (tiled over S and Hd, no kv-head padding; grpo_core.memory
    assumption 9), and the calibrated TPU programs were compiled with it. GPU compilers pick
    the physical layout of the loop carry themselves, so the choice is neutral there.
    """
    return "tpu" not in _platforms(mesh)


def _check_args(prompts, max_new_tokens: int, temperature: float, top_p: float, top_k: int, n: int):
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UserError("generate needs at least one prompt and every prompt needs at least one token.")
    if max_new_tokens < 1 or n < 1 or top_k < 0:
        raise UserError("max_new_tokens and n must be >= 1 and top_k >= 0 (0 turns top-k off).")
    if temperature < 0 or not 0 < top_p <= 1:
        raise UserError("temperature must be >= 0 (0 = greedy) and top_p in (0, 1] (1 = off).")


def sampler_rows(num_prompts: int, mesh) -> int:
    """Prompt rows the sampler compiles for: the count bucketed, then padded to the batch shards."""
    shards = batch_shards(mesh)
    return -(-bucket(num_prompts) // shards) * shards


def sampling_spec(model, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, stop_at_eos=True, n=1,
                  mesh=None, unroll_layers=None, heads_major=None) -> SamplingSpec:
    """The static settings of a call; decode path and cache layout follow the mesh's platform."""
    unroll_layers = _unroll_layers(mesh) if unroll_layers is None else bool(unroll_layers)
    heads_major = _heads_major(mesh) if heads_major is None else bool(heads_major)
    return SamplingSpec(max_new_tokens=max_new_tokens, temperature=float(temperature), top_p=float(top_p),
                        top_k=int(top_k), n=n, stop_at_eos=stop_at_eos, eos_ids=tuple(model.eos_token_ids),
                        pad_id=model.pad_token_id, unroll_layers=unroll_layers, heads_major=heads_major)


def generate_inputs(model, prompts, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, stop_at_eos=True, n=1,
                    mesh=None, unroll_layers=None, heads_major=None, min_prompt_width: int = 0):
    """(tokens, mask, spec, mesh): the jitted sampler's inputs for a `generate` call with
    these arguments (prompts padded to the bucketed shapes, placed on the mesh)."""
    _check_args(prompts, max_new_tokens, temperature, top_p, top_k, n)
    mesh = model.mesh if mesh is None else mesh
    rows = sampler_rows(len(prompts), mesh)
    width = sampler_prompt_width(max(len(p) for p in prompts), min_prompt_width)
    tokens, mask = _left_pad(prompts, rows, width, model.pad_token_id)
    if mesh is not None:
        tokens, mask = put_global(tokens, batch_sharding(mesh)), put_global(mask, batch_sharding(mesh))
    spec = sampling_spec(model, max_new_tokens, temperature, top_p, top_k, stop_at_eos, n, mesh,
                         unroll_layers, heads_major)
    return tokens, mask, spec, mesh


def sampler_prompt_width(longest_prompt: int, min_prompt_width: int = 0) -> int:
    """The prompt width `generate` pads prompts of up to `longest_prompt` tokens to: its bucket,
    or `min_prompt_width`'s when that is wider (a run that never lets its width shrink)."""
    return prompt_slots(max(min_prompt_width, longest_prompt))


def lower_generate(model, num_prompts: int, longest_prompt: int, mesh, **spec_args):
    """The sampler's program for `num_prompts` prompts of up to `longest_prompt` tokens, lowered
    with abstract inputs (model.params may be ShapeDtypeStructs): what `generate` compiles for
    such a call, e.g. for a device that is not here (grpo_core.aot)."""
    rows, width = sampler_rows(num_prompts, mesh), prompt_slots(longest_prompt)
    tokens = jax.ShapeDtypeStruct((rows, width), jnp.int32, sharding=batch_sharding(mesh))
    mask = jax.ShapeDtypeStruct((rows, width), jnp.bool_, sharding=batch_sharding(mesh))
    spec = sampling_spec(model, mesh=mesh, **spec_args)
    seed = jax.ShapeDtypeStruct((), jnp.uint32, sharding=replicated(mesh))
    return sampler_program(mesh, rows, spec.n).lower(model.params, tokens, mask, seed, cfg=model.config, spec=spec,
                                                      mesh=mesh)


def generate(model, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, seed: int = 0, stop_at_eos: bool = True, n: int = 1,
             mesh=None, unroll_layers: bool | None = None, heads_major: bool | None = None,
             min_prompt_width: int = 0) -> GenerationResult:
    """Sample `n` completions for each prompt (token id lists) with `model` (a grpo_core Model).

    Rows are group-contiguous (prompt i, sample j -> row i*n+j). `mesh` defaults to the
    mesh the params are sharded on; the batch is split over its dp/fsdp axes. Under
    several processes every process passes the same (global) prompts and gets the global
    result. See the module docstring for what `logps` holds. `unroll_layers` picks the
    decode path and `heads_major` the decode cache layout (None: `_unroll_layers` /
    `_heads_major` decide by platform; every choice gives the same tokens). Prompts are
    left-padded to `sampler_prompt_width(longest prompt, min_prompt_width)` slots.
    """
    program, args, kwargs = _sampler_call(model, prompts, max_new_tokens, temperature, top_p, top_k, seed,
                                          stop_at_eos, n, mesh, unroll_layers, heads_major, min_prompt_width)
    *out, steps = program(*args, **kwargs)
    tok_bt, lp_bt, lengths = (fetch_global(x)[: len(prompts) * n] for x in out)
    return _result(tok_bt, lp_bt, lengths, int(steps.addressable_data(0)), kwargs["spec"])


def _sampler_call(model, prompts, max_new_tokens, temperature, top_p, top_k, seed, stop_at_eos, n, mesh,
                  unroll_layers, heads_major, min_prompt_width=0):
    """(program, args, kwargs) of the jitted sampler call `generate` makes."""
    tokens, mask, spec, mesh = generate_inputs(model, prompts, max_new_tokens, temperature, top_p, top_k,
                                               stop_at_eos, n, mesh, unroll_layers, heads_major, min_prompt_width)
    # The seed is a traced (host, replicated) argument so a new seed does not recompile.
    program = sampler_program(mesh, tokens.shape[0], spec.n)
    return program, (model.params, tokens, mask, np.uint32(seed)), dict(cfg=model.config, spec=spec, mesh=mesh)


def lower_generate_call(model, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
                        top_p: float = 1.0, top_k: int = 0, n: int = 1, mesh=None, min_prompt_width: int = 0):
    """The program `generate` with these arguments runs, lowered and not run (the seed does
    not change the program): compiling it ahead makes that call a compilation-cache hit."""
    program, args, kwargs = _sampler_call(model, prompts, max_new_tokens, temperature, top_p, top_k, 0, True, n,
                                          mesh, None, None, min_prompt_width)
    return program.lower(*args, **kwargs)


def _result(tok_bt, lp_bt, lengths, steps: int, spec: SamplingSpec) -> GenerationResult:
    mask_bt = np.arange(tok_bt.shape[1])[None, :] < lengths[:, None]
    eos = set(spec.eos_ids) if spec.stop_at_eos else set()
    reasons = ["eos" if n and int(t[n - 1]) in eos else "length" for t, n in zip(tok_bt, lengths)]
    return GenerationResult(
        tokens=[t[:n].tolist() for t, n in zip(tok_bt, lengths)],
        logps=[p[:n].tolist() for p, n in zip(lp_bt, lengths)],
        finish_reason=reasons,
        tokens_bt=np.where(mask_bt, tok_bt, spec.pad_id).astype(np.int32),
        logps_bt=np.where(mask_bt, lp_bt, 0.0).astype(np.float32),
        mask_bt=mask_bt,
        lengths=lengths.astype(np.int32),
        num_steps=steps,
    )
