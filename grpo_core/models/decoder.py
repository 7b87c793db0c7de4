"""Llama / Qwen2 / Qwen3 decoder as pure functions over a params pytree.

Layers are stacked on a leading L axis and the forward is one `lax.scan` over them, so
compile time does not grow with depth. Weights keep their head axes ([D, N, Hd]) so the
sharding rules can split heads without reshapes. Dtype policy: params and the residual
stream use the params dtype (bfloat16 on accelerators); RMSNorm statistics, RoPE,
attention softmax and the logits are float32.

Attention masks are boolean "key is a real token" masks; padding is on the left, and
positions come from the caller (`positions_from_mask`), which is what makes a
left-padded row produce the same logits as the unpadded sequence.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from grpo_core.models.config import ModelConfig
from grpo_core.models.rope import apply_rope
from grpo_core.sharding import constrain

# Finite instead of -inf so a fully masked row (a pad query) gives uniform weights, not NaN.
_MASK_VALUE = -1e30


class KVCache(NamedTuple):
    """Preallocated key/value cache. k, v: [L, B, S, Nkv, Hd], or [L, B, Nkv, S, Hd] when
    "heads major" (see `forward`); mask: [B, S] bool (slot holds a real token)."""

    k: jax.Array
    v: jax.Array
    mask: jax.Array


def init_kv_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32, heads_major: bool = False) -> KVCache:
    """Empty cache for `batch` rows of up to `max_len` tokens (prompt + completion)."""
    slots_heads = (cfg.num_key_value_heads, max_len) if heads_major else (max_len, cfg.num_key_value_heads)
    shape = (cfg.num_hidden_layers, batch, *slots_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, max_len), bool))


def param_shapes(cfg: ModelConfig) -> dict:
    """Shape of every param leaf, same tree as `init_params`."""
    L, D, F, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    Nq, Nkv, Hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    layers = {
        "attn_norm": (L, D), "wq": (L, D, Nq, Hd), "wk": (L, D, Nkv, Hd), "wv": (L, D, Nkv, Hd),
        "wo": (L, Nq, Hd, D), "mlp_norm": (L, D), "w_gate": (L, D, F), "w_up": (L, D, F), "w_down": (L, F, D),
    }
    if cfg.attention_bias:
        layers.update(bq=(L, Nq, Hd), bk=(L, Nkv, Hd), bv=(L, Nkv, Hd))
    if cfg.qk_norm:
        layers.update(q_norm=(L, Hd), k_norm=(L, Hd))
    shapes = {"embed": (V, D), "layers": layers, "final_norm": (D,)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head"] = (D, V)
    return shapes


def param_logical_axes(cfg: ModelConfig) -> dict:
    """Logical axis names of every param leaf (same tree as the params); see grpo_core.sharding."""
    names = {
        "embed": ("vocab", "embed"), "final_norm": ("embed",), "lm_head": ("embed", "vocab"),
        "attn_norm": ("layers", "embed"), "mlp_norm": ("layers", "embed"),
        "wq": ("layers", "embed", "q_heads", "head_dim"), "wk": ("layers", "embed", "kv_heads", "head_dim"),
        "wv": ("layers", "embed", "kv_heads", "head_dim"), "wo": ("layers", "q_heads", "head_dim", "embed"),
        "bq": ("layers", "q_heads", "head_dim"), "bk": ("layers", "kv_heads", "head_dim"),
        "bv": ("layers", "kv_heads", "head_dim"), "q_norm": ("layers", "head_dim"), "k_norm": ("layers", "head_dim"),
        "w_gate": ("layers", "embed", "mlp"), "w_up": ("layers", "embed", "mlp"), "w_down": ("layers", "mlp", "embed"),
    }
    shapes = param_shapes(cfg)
    tree = {k: names[k] for k in shapes if k != "layers"}
    tree["layers"] = {k: names[k] for k in shapes["layers"]}
    return tree


KV_CACHE_AXES = KVCache(
    k=("layers", "batch", "seq", "kv_heads", "head_dim"),
    v=("layers", "batch", "seq", "kv_heads", "head_dim"),
    mask=("batch", "seq"),
)
# The same for a heads-major cache ([L, B, Nkv, S, Hd]).
KV_CACHE_AXES_HEADS_MAJOR = KVCache(
    k=("layers", "batch", "kv_heads", "seq", "head_dim"),
    v=("layers", "batch", "kv_heads", "seq", "head_dim"),
    mask=("batch", "seq"),
)


def kv_cache_axes(heads_major: bool) -> KVCache:
    """Logical axis names of a KVCache in either layout."""
    return KV_CACHE_AXES_HEADS_MAJOR if heads_major else KV_CACHE_AXES


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """Random params (normal, std 0.02; norms at 1, biases at 0) in `dtype`."""
    return _init_params(cfg, key, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 2))  # one compile instead of one per leaf shape
def _init_params(cfg: ModelConfig, key: jax.Array, dtype) -> dict:
    shapes = param_shapes(cfg)
    flat, treedef = jax.tree.flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(key, len(flat))
    leaves = []
    for (path, shape), k in zip(flat, keys):
        name = path[-1].key
        if name.endswith("norm"):
            leaves.append(jnp.ones(shape, dtype))
        elif name.startswith("b"):
            leaves.append(jnp.zeros(shape, dtype))
        else:
            leaves.append((0.02 * jax.random.normal(k, shape, jnp.float32)).astype(dtype))
    return jax.tree.unflatten(treedef, leaves)


def positions_from_mask(mask_bt: jax.Array) -> jax.Array:
    """Positions [B, T] int32 for left-padded rows: 0 at the first real token; pads get 0."""
    return jnp.maximum(jnp.cumsum(mask_bt.astype(jnp.int32), axis=-1) - 1, 0)


def rms_norm(x: jax.Array, w: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis with float32 statistics; returns x's dtype."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype) * w.astype(x.dtype)


def attention(q, k, v, allowed_bts) -> jax.Array:
    """Grouped-query attention. q: [B, T, Nq, Hd]; k, v: [B, S, Nkv, Hd]; allowed_bts: [B, T, S] bool.

    Returns [B, T, Nq, Hd]. Query heads are grouped onto their shared kv head by a reshape,
    so k/v are never repeated in memory.
    """
    B, T, Nq, Hd = q.shape
    Nkv = k.shape[2]
    qg = q.reshape(B, T, Nkv, Nq // Nkv, Hd)
    scores = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32) / jnp.sqrt(Hd)
    scores = jnp.where(allowed_bts[:, None, None], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(B, T, Nq, Hd)


def attention_with_cache(q, k, v, allowed_bts, k_old, v_old, allowed_old_bts, heads_major: bool = False) -> jax.Array:
    """Attention over two key blocks: the cache (k_old, v_old: [B, S, Nkv, Hd], or
    [B, Nkv, S, Hd] when `heads_major`, read only; allowed_old_bts [B, T, S]) and the T new
    tokens (k, v: [B, T, Nkv, Hd]; allowed_bts [B, T, T]). Returns [B, T, Nq, Hd].

    The blocks are never concatenated (that would copy the cache every layer); one softmax
    spans both through a shared max and a shared normaliser.
    """
    B, T, Nq, Hd = q.shape
    Nkv = k.shape[2]
    qg = q.reshape(B, T, Nkv, Nq // Nkv, Hd)
    scale = 1.0 / jnp.sqrt(jnp.float32(Hd))

    old_keys = "bksh" if heads_major else "bskh"

    def scores(keys, allowed, layout="bskh"):
        s = jnp.einsum(f"btkgh,{layout}->bkgts", qg, keys, preferred_element_type=jnp.float32) * scale
        return jnp.where(allowed[:, None, None], s, _MASK_VALUE)

    # One query against a heads-major cache: multiply-reduce instead of a dot, so XLA fuses
    # the read of the cache slice into the reduction (a dot would copy the slice first).
    fused = heads_major and T == 1
    if fused:
        old = jnp.sum(qg[:, 0, :, :, None, :].astype(jnp.float32) * k_old[:, :, None].astype(jnp.float32), axis=-1)
        old = jnp.where(allowed_old_bts[:, None, None], old[:, :, :, None, :] * scale, _MASK_VALUE)
    else:
        old = scores(k_old, allowed_old_bts, old_keys)
    new = scores(k, allowed_bts)
    top = jnp.maximum(jnp.max(old, axis=-1, keepdims=True), jnp.max(new, axis=-1, keepdims=True))
    old, new = jnp.exp(old - top), jnp.exp(new - top)
    norm = jnp.sum(old, axis=-1, keepdims=True) + jnp.sum(new, axis=-1, keepdims=True)
    if fused:
        from_old = jnp.sum((old / norm)[:, :, :, 0, :, None] * v_old[:, :, None].astype(jnp.float32), axis=3)
        from_old = from_old[:, None].astype(v.dtype)  # [B, 1, Nkv, G, Hd]
    else:
        from_old = jnp.einsum(f"bkgts,{old_keys}->btkgh", (old / norm).astype(v.dtype), v_old)
    out = (from_old
           + jnp.einsum("bkgts,bskh->btkgh", (new / norm).astype(v.dtype), v))
    return out.reshape(B, T, Nq, Hd)


# Adapter targets in a fixed order: each one's dropout key is the layer's key folded with its index.
_LORA_ORDER = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


def with_lora(p: dict, name: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """y (= x @ p[name]) plus the low-rank path dropout(x) @ A @ B when the layer params carry
    adapters for `name` (grpo_core.lora.attach: B is pre-scaled). x: [B, T, *in]; y: [B, T, *out].
    The adapter path runs in float32 and is added in y's dtype, as PEFT does."""
    adapter = p.get("lora", {}).get(name)
    if adapter is None:
        return y
    x = x.astype(jnp.float32)
    if "lora_dropout" in p:
        drop = p["lora_dropout"]
        rate = drop["rate"]
        keep = jax.random.bernoulli(jax.random.fold_in(drop["key"], _LORA_ORDER.index(name)), 1.0 - rate, x.shape)
        x = jnp.where(keep, x / (1.0 - rate), 0.0)
    a, b = adapter["a"], adapter["b"]
    xa = jnp.tensordot(x, a, axes=a.ndim - 1)  # [B, T, r]
    return y + jnp.tensordot(xa, b, axes=1).astype(y.dtype)


def _project_qkv(p: dict, x: jax.Array, positions_bt: jax.Array, cfg: ModelConfig):
    """x: [B, T, D] -> q [B, T, Nq, Hd], k, v [B, T, Nkv, Hd] with RoPE applied to q and k
    (after the per-head q/k RMSNorm when the config has one)."""
    q = with_lora(p, "wq", x, jnp.einsum("btd,dnh->btnh", x, p["wq"]))
    k = with_lora(p, "wk", x, jnp.einsum("btd,dnh->btnh", x, p["wk"]))
    v = with_lora(p, "wv", x, jnp.einsum("btd,dnh->btnh", x, p["wv"]))
    if cfg.attention_bias:
        q, k, v = q + p["bq"], k + p["bk"], v + p["bv"]
    if cfg.qk_norm:
        q, k = rms_norm(q, p["q_norm"], cfg.rms_norm_eps), rms_norm(k, p["k_norm"], cfg.rms_norm_eps)
    theta, scaling = cfg.rope_theta, cfg.rope_scaling
    return apply_rope(q, positions_bt, theta, scaling), apply_rope(k, positions_bt, theta, scaling), v


@jax.custom_vjp
def swiglu(gate: jax.Array, up: jax.Array) -> jax.Array:
    """silu(gate) * up, whose gradient keeps only `gate` and `up` for the backward pass.

    Autodiff of `jax.nn.silu(gate) * up` saves four [B, T, F] residuals per layer (the
    sigmoid, its complement, products); each is written in the forward and read back,
    and on CPU each read sits in the backward's transposing fusion (see RESULTS.md). Here
    the sigmoid is recomputed in the backward from the two inputs.
    """
    return jax.nn.silu(gate) * up


def _swiglu_fwd(gate, up):
    return swiglu(gate, up), (gate, up)


def _swiglu_bwd(saved, g):
    gate, up = saved
    s = jax.nn.sigmoid(gate)
    silu = gate * s
    return g * up * (s + silu * (1 - s)), g * silu  # d silu/dx = s + x s (1 - s)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


@jax.custom_vjp
def gate_up(x: jax.Array, w_gate: jax.Array, w_up: jax.Array):
    """The MLP's two input projections x @ w_gate, x @ w_up ([B, T, D] -> two [B, T, F]).

    Same values and gradients as the two einsums; what differs is how the weight gradients
    x^T @ d_gate and x^T @ d_up are laid out on CPU. Both operands have the token axis
    first, so one must be transposed for the matmul; left alone, XLA's CPU backend
    transposes the F-wide d_gate and d_up, each inside an elementwise fusion whose strided
    writes made them ~15% of the whole update (profile in benchmarks/RESULTS.md). Here x
    (D wide, 2.7x narrower for SmolLM2) is transposed once and serves both products; the
    optimization barrier keeps XLA from folding that transpose back into the matmuls.
    """
    return jnp.einsum("btd,df->btf", x, w_gate), jnp.einsum("btd,df->btf", x, w_up)


def _gate_up_fwd(x, w_gate, w_up):
    return gate_up(x, w_gate, w_up), (x, w_gate, w_up)


def _weight_grads_x_transposed(x, d_gate, d_up):
    """x^T @ d_gate and x^T @ d_up with x transposed once (the CPU layout, see `gate_up`)."""
    x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)  # [D, B*T]
    return (jnp.dot(x_t, d_gate.reshape(-1, d_gate.shape[-1])),
            jnp.dot(x_t, d_up.reshape(-1, d_up.shape[-1])))


def _weight_grads_einsum(x, d_gate, d_up):
    """The same products as einsums: GPU and TPU matmuls take transposed operands as they are."""
    return jnp.einsum("btd,btf->df", x, d_gate), jnp.einsum("btd,btf->df", x, d_up)


def _gate_up_bwd(saved, grads):
    x, w_gate, w_up = saved
    d_gate, d_up = grads
    # Chosen when the program is lowered, for the platform it is compiled for (a TPU program
    # compiled on a CPU host takes the TPU form), never the host's default backend.
    d_w_gate, d_w_up = jax.lax.platform_dependent(x, d_gate, d_up, cpu=_weight_grads_x_transposed,
                                                  default=_weight_grads_einsum)
    d_x = jnp.einsum("btf,df->btd", d_gate, w_gate) + jnp.einsum("btf,df->btd", d_up, w_up)
    return d_x, d_w_gate.astype(w_gate.dtype), d_w_up.astype(w_up.dtype)


gate_up.defvjp(_gate_up_fwd, _gate_up_bwd)


def _mlp(p: dict, x: jax.Array) -> jax.Array:
    gate, up = gate_up(x, p["w_gate"], p["w_up"])
    gate, up = with_lora(p, "w_gate", x, gate), with_lora(p, "w_up", x, up)
    act = swiglu(gate, up)
    return with_lora(p, "w_down", act, jnp.einsum("btf,fd->btd", act, p["w_down"]))


def _layer(cfg: ModelConfig, h, p, positions_bt, allowed_bts, cached, heads_major: bool = False):
    """One decoder block. h: [B, T, D]; cached: None, or (k_old, v_old, allowed_old) with this
    layer's cache k/v [B, S, Nkv, Hd] (or [B, Nkv, S, Hd], `heads_major`; read only) and
    allowed_old [B, T, S].

    Returns (h, (k, v)): the block's own keys/values [B, T, Nkv, Hd], which the caller
    writes into the cache once, after all layers (so the scan never carries the cache).
    """
    x = rms_norm(h, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = _project_qkv(p, x, positions_bt, cfg)
    if cached is None:
        attn = attention(q, k, v, allowed_bts)
    else:
        k_old, v_old, allowed_old = cached
        attn = attention_with_cache(q, k, v, allowed_bts, k_old.astype(q.dtype), v_old.astype(q.dtype), allowed_old,
                                    heads_major)
    h = h + with_lora(p, "wo", attn, jnp.einsum("btnh,nhd->btd", attn, p["wo"]))
    h = h + _mlp(p, rms_norm(h, p["mlp_norm"], cfg.rms_norm_eps))
    return h, (k, v)


def _allowed(key_mask_bs: jax.Array, q_slots: int, offset) -> jax.Array:
    """[B, T, S] bool: key slot s is real and not after query slot offset + t (causal)."""
    S = key_mask_bs.shape[1]
    causal = jnp.arange(S)[None, :] <= (offset + jnp.arange(q_slots))[:, None]
    return key_mask_bs[:, None, :] & causal[None]


def logits_from_hidden(params: dict, h_btd: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Final norm + LM head; float32 logits [B, T, V] (tied head uses embed.T)."""
    h = rms_norm(h_btd, params["final_norm"], cfg.rms_norm_eps)
    if cfg.tie_word_embeddings:
        return jnp.einsum("btd,vd->btv", h, params["embed"], preferred_element_type=jnp.float32)
    return jnp.einsum("btd,dv->btv", h, params["lm_head"], preferred_element_type=jnp.float32)


def split_layers(layers: dict) -> list[dict]:
    """The stacked [L, ...] layer params as L per-layer dicts (inside jit: L copies, made once)."""
    n = jax.tree.leaves(layers)[0].shape[0]
    return [jax.tree.map(lambda x, i=i: x[i], layers) for i in range(n)]


def _write_slots(cache, new, pos, heads_major: bool):
    """Write new [..., B, T, Nkv, Hd] keys/values into slots [pos, pos + T) of a cache
    [..., B, S, Nkv, Hd] (or [..., B, Nkv, S, Hd] when heads_major)."""
    new = new.astype(cache.dtype)
    lead = (0,) * (cache.ndim - 4)
    if heads_major:
        return jax.lax.dynamic_update_slice(cache, jnp.swapaxes(new, -3, -2), (*lead, 0, 0, pos, 0))
    return jax.lax.dynamic_update_slice(cache, new, (*lead, 0, pos, 0, 0))


def decode_step(params, layer_params: list[dict], tokens_b1, cfg: ModelConfig, *, positions_b1,
                caches: list[tuple], cache_mask_bs, cache_pos, heads_major: bool = False, mesh=None):
    """One decode token per row through layers unrolled in Python (no layer scan).

    layer_params: `split_layers(params["layers"])`; caches: per layer (k, v) [B, S, Nkv, Hd]
    with cache_mask_bs [B, S] marking filled slots. Each layer attends to its cache plus
    the new token and writes the token's k/v into slot `cache_pos` of its own buffer.
    Returns (logits [B, 1, V] float32, new caches, new mask).

    Against `forward` with a cache, this avoids what a scan over stacked layers costs per
    decode step on CPU and GPU: a dynamic-slice copy of every weight matrix of every layer
    (twice the weight traffic) and a loop iteration per layer; the per-layer weight copies
    are made once per generate call instead of once per token.
    """
    B = tokens_b1.shape[0]
    S = cache_mask_bs.shape[1]
    h = constrain(params["embed"][tokens_b1], ("batch", "seq", None), mesh)
    allowed_old = ((cache_mask_bs & (jnp.arange(S) < cache_pos)))[:, None, :]
    allowed_new = jnp.ones((B, 1, 1), bool)
    new_caches = []
    for p, (k_l, v_l) in zip(layer_params, caches):
        h, (k, v) = _layer(cfg, h, p, positions_b1, allowed_new, (k_l, v_l, allowed_old), heads_major)
        new_caches.append((_write_slots(k_l, k, cache_pos, heads_major), _write_slots(v_l, v, cache_pos, heads_major)))
        h = constrain(h, ("batch", "seq", None), mesh)
    mask = jax.lax.dynamic_update_slice(cache_mask_bs, jnp.ones((B, 1), bool), (0, cache_pos))
    logits = constrain(logits_from_hidden(params, h, cfg), ("batch", "seq", "vocab"), mesh)
    return logits, new_caches, mask


def forward(params, tokens_bt, cfg: ModelConfig, *, positions_bt, attn_mask_bt=None,
            kv_cache: KVCache | None = None, cache_pos=None, remat: bool = False,
            return_hidden: bool = False, return_kv: bool = False, write_cache: bool = True,
            cache_heads_major: bool = False, mesh=None):
    """Run the decoder.

    tokens_bt, positions_bt: [B, T] int; attn_mask_bt: [B, T] bool (False = left pad; default
    all True). Without a cache, attention is causal over these T tokens. With `kv_cache`, the
    T tokens occupy cache slots [cache_pos, cache_pos+T) (cache_pos: int scalar, the same for
    all rows because prompts are left-padded to a common length) and attend to every earlier
    real slot; the cache is only read inside the layer scan and the T new keys/values are
    written once after it (`write_cache=False` skips the write: the cache is then a
    read-only prefix, e.g. a shared prompt, and S may equal cache_pos). Returns (logits
    [B, T, V] float32, updated KVCache or None); with `return_hidden` the first item is the
    final hidden state [B, T, D] before the norm. `return_kv` (no cache) returns the
    layers' keys/values ([L, B, T, Nkv, Hd] each) as the second item instead of None.
    `cache_heads_major`: the cache is laid out [L, B, Nkv, S, Hd], so a decode step's
    attention reads it without a transpose per layer (what the CPU sampler uses).
    `remat` recomputes each layer in the backward pass (jax.checkpoint) to save memory.
    `mesh` (static) pins the residual stream to the batch sharding of the rules table, so
    XLA's propagation cannot pick a worse layout between layers.
    """
    B, T = tokens_bt.shape
    mask = jnp.ones((B, T), bool) if attn_mask_bt is None else attn_mask_bt.astype(bool)
    h = constrain(params["embed"][tokens_bt], ("batch", "seq", None), mesh)
    allowed = _allowed(mask, T, 0)  # the T new tokens among themselves
    if kv_cache is not None:
        # Earlier slots only: the slots this call writes are covered by `allowed`.
        S = kv_cache.mask.shape[1]
        allowed_old = jnp.broadcast_to((kv_cache.mask & (jnp.arange(S) < cache_pos))[:, None, :], (B, T, S))

    def body(h, xs):
        if kv_cache is None:
            p, cached = xs, None
        else:
            p, k_old, v_old = xs
            cached = (k_old, v_old, allowed_old)
        h, kv = _layer(cfg, h, p, positions_bt, allowed, cached, cache_heads_major)
        return constrain(h, ("batch", "seq", None), mesh), (kv if kv_cache is not None or return_kv else None)

    if remat:
        body = jax.checkpoint(body)
    xs = params["layers"] if kv_cache is None else (params["layers"], kv_cache.k, kv_cache.v)
    h, new_kv = jax.lax.scan(body, h, xs)
    new_cache = None
    if kv_cache is not None and write_cache:
        new_cache = KVCache(_write_slots(kv_cache.k, new_kv[0], cache_pos, cache_heads_major),
                            _write_slots(kv_cache.v, new_kv[1], cache_pos, cache_heads_major),
                            jax.lax.dynamic_update_slice(kv_cache.mask, mask, (0, cache_pos)))
    elif return_kv:
        new_cache = new_kv
    if return_hidden:
        return h, new_cache
    return constrain(logits_from_hidden(params, h, cfg), ("batch", "seq", "vocab"), mesh), new_cache
