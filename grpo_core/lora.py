"""Low-rank adapters (LoRA) on the decoder's projections, with PEFT's conventions.

A target weight W of shape [in..., out...] (our layout; `wq` is [D, Nq, Hd]) gets two
float32 factors per layer: A [in..., r] and B [r, out...], and the projection becomes

    y = x @ W + (dropout(x) @ A @ B) * alpha / r

which is PEFT's `LoraLayer` with use_rslora=False: PEFT's lora_A.weight [r, in] is our A
transposed, its lora_B.weight [out, r] our B transposed. A starts as PEFT's
kaiming-uniform (a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), B at zero, so the policy
at step 0 is the base model exactly.

The adapters are the trainable params; the base stays frozen in its own dtype and is
also the KL reference (the adapters switched off), so no second copy of the weights
exists. The decoder sees the adapters as a "lora" entry of the per-layer params
(`attach`): B there is already multiplied by the scale, which keeps the decoder free of
LoRA settings. Sampling merges the adapters into the base once per rollout (`merge`).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from grpo_core.models.config import ModelConfig
from grpo_core.models.decoder import param_logical_axes, param_shapes
from grpo_core.sharding import tree_shardings

# Target leaf -> number of its leading (input) axes after the layer axis.
TARGETS = {"wq": 1, "wk": 1, "wv": 1, "wo": 2, "w_gate": 1, "w_up": 1, "w_down": 1}
RANK_AXIS = "lora_rank"  # logical axis of the rank dimension (replicated, sharding.py)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """rank r, alpha, dropout probability on the adapters' input, target leaves."""

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: tuple[str, ...] = tuple(TARGETS)

    @property
    def scale(self) -> float:
        """PEFT's scaling without rsLoRA: alpha / r."""
        return self.alpha / self.rank


def spec_from_config(section) -> LoraSpec | None:
    """The LoraSpec of a `model.lora` section; None (full fine-tuning) when absent or rank 0."""
    if section is None or section.rank == 0:
        return None
    return LoraSpec(section.rank, float(section.alpha), float(section.dropout), tuple(section.targets))


def _factors(per_layer: dict, spec: LoraSpec, rank) -> dict:
    """A and B entries from the target weights' entries (shapes or axis names), `rank` as
    the rank dimension: A [layers, *in, rank], B [layers, rank, *out]."""
    out = {}
    for name in spec.targets:
        layers, *dims = per_layer[name]
        n_in = TARGETS[name]
        out[name] = {"a": (layers, *dims[:n_in], rank), "b": (layers, rank, *dims[n_in:])}
    return {"layers": out}


def adapter_shapes(cfg: ModelConfig, spec: LoraSpec) -> dict:
    """{"layers": {target: {"a": (L, *in, r), "b": (L, r, *out)}}}."""
    return _factors(param_shapes(cfg)["layers"], spec, spec.rank)


def adapter_logical_axes(cfg: ModelConfig, spec: LoraSpec) -> dict:
    """Logical axis names of the adapters: A and B are split like their base weight's axes."""
    return _factors(param_logical_axes(cfg)["layers"], spec, RANK_AXIS)


def init_adapters(cfg: ModelConfig, spec: LoraSpec, key: jax.Array) -> dict:
    """float32 adapters: A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PEFT's kaiming-uniform with
    a = sqrt(5)), one key per target; B = 0."""
    shapes = adapter_shapes(cfg, spec)["layers"]
    keys = jax.random.split(key, len(TARGETS))
    out = {}
    for name, k in zip(TARGETS, keys):  # keys follow the fixed target order, whatever is chosen
        if name not in shapes:
            continue
        a_shape = shapes[name]["a"]
        bound = 1.0 / math.sqrt(math.prod(a_shape[1:-1]))
        out[name] = {"a": jax.random.uniform(k, a_shape, jnp.float32, -bound, bound),
                     "b": jnp.zeros(shapes[name]["b"], jnp.float32)}
    return {"layers": out}


def attach(base: dict, adapters: dict, spec: LoraSpec, dropout_key: jax.Array | None = None) -> dict:
    """The params the decoder runs with adapters: base plus a "lora" entry per layer (B
    pre-scaled), and, when `dropout_key` is given and spec.dropout > 0, one dropout key
    per layer ("lora_dropout": key [L, 2], rate [L])."""
    lora = {name: {"a": ad["a"], "b": ad["b"] * spec.scale} for name, ad in adapters["layers"].items()}
    layers = dict(base["layers"], lora=lora)
    if dropout_key is not None and spec.dropout > 0:
        n = jax.tree.leaves(base["layers"])[0].shape[0]
        layers["lora_dropout"] = {"key": jax.random.split(dropout_key, n),
                                  "rate": jnp.full((n,), spec.dropout, jnp.float32)}
    return dict(base, layers=layers)


def dropout_key(seed: int, epoch: int, tokens_bt: jax.Array) -> jax.Array:
    """The adapters' dropout key of one micro-batch (inside jit): from the run seed, the
    epoch and a position-weighted checksum of its tokens [B, T], so a resumed step draws
    the masks the uninterrupted one drew."""
    tokens = tokens_bt.astype(jnp.uint32)
    checksum = jnp.sum(tokens * (jnp.arange(tokens.size, dtype=jnp.uint32).reshape(tokens.shape) + 1))
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), epoch), checksum)


def stacked_delta(a: jax.Array, b: jax.Array) -> jax.Array:
    """A @ B over the rank per layer, float32: [L, *in, r] x [L, r, *out] -> [L, *in, *out]."""
    n_in, n_out = a.ndim - 2, b.ndim - 2
    ins, outs = "abcd"[:n_in], "efgh"[:n_out]
    return jnp.einsum(f"l{ins}r,lr{outs}->l{ins}{outs}", a.astype(jnp.float32), b.astype(jnp.float32))


def merge(base: dict, adapters: dict, spec: LoraSpec) -> dict:
    """Base weights with the adapters folded in, W + scale * A @ B, in the base's dtype."""
    layers = dict(base["layers"])
    for name, ad in adapters["layers"].items():
        w = layers[name]
        layers[name] = (w.astype(jnp.float32) + spec.scale * stacked_delta(ad["a"], ad["b"])).astype(w.dtype)
    return dict(base, layers=layers)


def init_sharded_adapters(cfg: ModelConfig, spec: LoraSpec, seed: int, mesh) -> dict:
    """`init_adapters` from the run seed, created sharded over `mesh` by the rules table."""
    shapes = jax.eval_shape(lambda: init_adapters(cfg, spec, jax.random.PRNGKey(0)))
    shardings = tree_shardings(adapter_logical_axes(cfg, spec), shapes, mesh)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x10A)  # not the base init's key
    return jax.jit(lambda k: init_adapters(cfg, spec, k), out_shardings=shardings)(key)


def abstract_adapters(cfg: ModelConfig, spec: LoraSpec, mesh) -> dict:
    """ShapeDtypeStructs of the float32 adapters, sharded over `mesh` by the rules table."""
    shapes = jax.eval_shape(lambda: init_adapters(cfg, spec, jax.random.PRNGKey(0)))
    shardings = tree_shardings(adapter_logical_axes(cfg, spec), shapes, mesh)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def merge_program(spec: LoraSpec, base: dict):
    """`merge` as a function of (base, adapters) that runs one jitted program over the target
    weights only, outputs sharded like them; the other leaves are the base's own arrays (no
    copy). The caller keeps it, so every rollout reuses one compiled program."""
    shardings = {name: base["layers"][name].sharding for name in spec.targets}

    def merged_targets(targets, adapters):
        return merge({"layers": targets}, adapters, spec)["layers"]

    program = jax.jit(merged_targets, out_shardings=shardings)

    def run(base: dict, adapters: dict) -> dict:
        targets = program({name: base["layers"][name] for name in spec.targets}, adapters)
        return dict(base, layers=dict(base["layers"], **targets))

    return run


def _hf_module(name: str) -> str:
    """HF module path inside a layer of target `name`, e.g. "self_attn.q_proj"."""
    from grpo_core.models.hf_names import LAYER_NAMES

    return LAYER_NAMES[name][0].removesuffix(".weight")


def peft_tensors(adapters: dict) -> dict[str, np.ndarray]:
    """The adapters under PEFT's state-dict names, float32: lora_A.weight [r, in] and
    lora_B.weight [out, r] per layer and target (heads flattened as HF's Linear does)."""
    out = {}
    for name, adapter in adapters["layers"].items():
        a, b = np.asarray(adapter["a"], np.float32), np.asarray(adapter["b"], np.float32)
        rank = a.shape[-1]
        for i in range(a.shape[0]):
            prefix = f"base_model.model.model.layers.{i}.{_hf_module(name)}"
            out[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, rank).T)
            out[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(rank, -1).T)
    return out


def peft_config(spec: LoraSpec, base_model: str) -> dict:
    """adapter_config.json for PEFT's LoraConfig (plain LoRA, scale alpha / r)."""
    alpha = int(spec.alpha) if float(spec.alpha).is_integer() else spec.alpha
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": spec.rank, "lora_alpha": alpha, "lora_dropout": spec.dropout, "use_rslora": False,
            "target_modules": sorted(_hf_module(name).split(".")[-1] for name in spec.targets),
            "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
            "modules_to_save": None}
