"""HF transformers tensor names <-> our params pytree.

One mapping used by the safetensors loader, the GGUF converter (after it has undone
llama.cpp's q/k row permutation) and the torch parity tests. Torch `Linear.weight` is
[out, in]; ours are [in, ...heads...] so a matmul is `x @ w`. Layers are stacked on a
leading axis; the stacked arrays are filled in place so a large model is not held twice.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from grpo_core.models.config import ModelConfig
from grpo_core.models.decoder import param_shapes

_PREFIX = "model.layers.{i}."
# our layer leaf -> (HF name inside a layer, kind); kind says how to reshape the torch tensor.
LAYER_NAMES = {
    "attn_norm": ("input_layernorm.weight", "vector"),
    "mlp_norm": ("post_attention_layernorm.weight", "vector"),
    "wq": ("self_attn.q_proj.weight", "in_heads"),
    "wk": ("self_attn.k_proj.weight", "in_heads"),
    "wv": ("self_attn.v_proj.weight", "in_heads"),
    "bq": ("self_attn.q_proj.bias", "heads"),
    "bk": ("self_attn.k_proj.bias", "heads"),
    "bv": ("self_attn.v_proj.bias", "heads"),
    "q_norm": ("self_attn.q_norm.weight", "vector"),
    "k_norm": ("self_attn.k_norm.weight", "vector"),
    "wo": ("self_attn.o_proj.weight", "heads_out"),
    "w_gate": ("mlp.gate_proj.weight", "transpose"),
    "w_up": ("mlp.up_proj.weight", "transpose"),
    "w_down": ("mlp.down_proj.weight", "transpose"),
}
TOP_NAMES = {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight", "lm_head": "lm_head.weight"}


def _from_torch(t: np.ndarray, kind: str, shape: tuple) -> np.ndarray:
    """Torch-layout tensor -> our layout `shape` (one layer, no L axis)."""
    if kind in ("vector", "heads"):
        return t.reshape(shape)
    # "in_heads" [N*Hd, D] -> [D, N, Hd]; "heads_out" [D, N*Hd] -> [N, Hd, D]; "transpose" [out, in] -> [in, out]
    return t.T.reshape(shape)


def _to_torch(w: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of `_from_torch` for one layer's array."""
    if kind == "vector":
        return w
    if kind == "heads":
        return w.reshape(-1)
    if kind == "in_heads":  # [D, N, Hd] -> [N*Hd, D]
        return w.reshape(w.shape[0], -1).T
    if kind == "heads_out":  # [N, Hd, D] -> [D, N*Hd]
        return w.reshape(-1, w.shape[-1]).T
    return w.T


def params_from_hf_state(cfg: ModelConfig, get_tensor: Callable[[str], np.ndarray], dtype=np.float32) -> dict:
    """Build the params pytree (numpy, `dtype`) from HF names.

    `get_tensor(name)` returns the torch-layout array for an HF tensor name (e.g. from a
    safetensors `safe_open(...).get_tensor`). `lm_head.weight` is read only when the config
    is untied. Put the result on devices with `grpo_core.sharding.shard_params`.
    """
    shapes = param_shapes(cfg)
    params = {}
    for name, hf_name in TOP_NAMES.items():
        if name in shapes:
            kind = "transpose" if name == "lm_head" else "vector"
            params[name] = np.ascontiguousarray(_from_torch(np.asarray(get_tensor(hf_name)), kind, shapes[name]), dtype)
    layers = {}
    for name, shape in shapes["layers"].items():
        hf_name, kind = LAYER_NAMES[name]
        stacked = np.empty(shape, dtype)
        for i in range(cfg.num_hidden_layers):
            stacked[i] = _from_torch(np.asarray(get_tensor(_PREFIX.format(i=i) + hf_name)), kind, shape[1:])
        layers[name] = stacked
    params["layers"] = layers
    return params


def hf_state_from_params(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """Inverse of `params_from_hf_state`: HF name -> torch-layout numpy array (for export)."""
    state = {}
    for name, hf_name in TOP_NAMES.items():
        if name in params:
            w = np.asarray(params[name])
            state[hf_name] = w.T if name == "lm_head" else w
    for name, stacked in params["layers"].items():
        hf_name, kind = LAYER_NAMES[name]
        stacked = np.asarray(stacked)
        for i in range(cfg.num_hidden_layers):
            state[_PREFIX.format(i=i) + hf_name] = np.ascontiguousarray(_to_torch(stacked[i], kind))
    return state
