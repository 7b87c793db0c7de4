"""`Model`: a config, a params pytree and (optionally) a tokenizer, with a jitted logits call.

The jitted forward is module-level and keyed on the (hashable) config, so every Model
of the same architecture shares one compilation per input shape.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grpo_core.models.config import ModelConfig
from grpo_core.models.decoder import forward, positions_from_mask


@functools.partial(jax.jit, static_argnames=("cfg", "mesh"))
def _logits(params, tokens_bt, mask_bt, cfg: ModelConfig, mesh):
    logits, _ = forward(params, tokens_bt, cfg, positions_bt=positions_from_mask(mask_bt), attn_mask_bt=mask_bt,
                        mesh=mesh)
    return logits


def params_mesh(params) -> jax.sharding.Mesh | None:
    """The mesh the params are sharded over (None for single-device params)."""
    sharding = getattr(params["embed"], "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding) and sharding.mesh.size > 1:
        return sharding.mesh
    return None


class Model:
    """A decoder ready to run: `config` (ModelConfig), `params` (pytree, possibly sharded), `tokenizer`."""

    def __init__(self, config: ModelConfig, params: dict, tokenizer: Any = None):
        self.config = config
        self.params = params
        self.tokenizer = tokenizer

    @property
    def mesh(self) -> jax.sharding.Mesh | None:
        """Mesh of the params (set by `grpo_core.sharding.shard_params`), or None."""
        return params_mesh(self.params)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Token ids that end a completion (from the config, e.g. <|im_end|> and <|endoftext|>)."""
        return self.config.eos_token_ids

    @property
    def pad_token_id(self) -> int:
        """Id used to fill padding slots (config pad, else the first EOS, else 0)."""
        if self.config.pad_token_id is not None:
            return self.config.pad_token_id
        return self.eos_token_ids[0] if self.eos_token_ids else 0

    def logits(self, input_ids, attention_mask=None) -> jax.Array:
        """Float32 logits [B, T, V] for input_ids [B, T]; attention_mask [B, T] (0 = left pad).

        Positions count real tokens only, so a left-padded row matches its unpadded logits.
        """
        tokens = _as_array(input_ids).astype(jnp.int32)
        mask = jnp.ones(tokens.shape, bool) if attention_mask is None else _as_array(attention_mask).astype(bool)
        return _logits(self.params, tokens, mask, self.config, self.mesh)


def _as_array(x) -> jax.Array:
    """Keep jax arrays (and their sharding) as they are; move host data to the default device."""
    return x if isinstance(x, jax.Array) else jnp.asarray(np.asarray(x))
