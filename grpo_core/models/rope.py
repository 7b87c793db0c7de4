"""Rotary position embeddings, and the frequency scalings of Llama 3.x checkpoints.

HF config.json spells RoPE as `rope_parameters` (transformers 5) or `rope_scaling` (older
files; transformers gives it precedence when both are present), with `rope_theta` inside
or beside it. `llama3` (every Llama 3.1 / 3.2 / 3.3 checkpoint) divides the low
frequencies by `factor`, keeps the high ones and blends in between; `linear` divides them
all. Both only change the inverse frequencies, which are computed in float32 as
transformers computes them. Types whose frequencies depend on the sequence length at run
time (`dynamic`) or that rescale attention (`yarn`, `longrope`) are refused.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from grpo_core.errors import UserError

SCALED_TYPES = ("llama3", "linear")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """The scaling part of config.json's rope_parameters; fields follow its keys."""

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.rope_type not in SCALED_TYPES:
            raise UserError(f"RoPE scaling type {self.rope_type!r} is not supported; use one of {SCALED_TYPES}.")
        if self.factor <= 0:
            raise UserError(f"rope_parameters.factor={self.factor} must be positive in config.json.")
        if self.rope_type == "llama3" and not self.low_freq_factor < self.high_freq_factor:
            raise UserError(
                f"rope_parameters.low_freq_factor={self.low_freq_factor} must be below high_freq_factor="
                f"{self.high_freq_factor} in config.json."
            )

    def to_hf(self) -> dict:
        """The rope_parameters keys of this scaling (without rope_theta)."""
        if self.rope_type == "linear":
            return {"rope_type": "linear", "factor": self.factor}
        return {"rope_type": "llama3", **{key: getattr(self, key) for key in _LLAMA3_KEYS}}


def rope_from_hf(hf: dict) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling or None) of an HF config.json dict; UserError for unsupported types."""
    rope = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise UserError(f"config.json partial_rotary_factor={partial} is not supported; only full rotary (1.0) is.")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type not in SCALED_TYPES:
        raise UserError(
            f"config.json rope_parameters.rope_type {rope_type!r} is not supported; use a checkpoint with "
            f"rope_type 'default', {' or '.join(repr(t) for t in SCALED_TYPES)}."
        )
    if rope_type == "linear":
        return theta, RopeScaling("linear", float(_required(rope, "factor")))
    # transformers falls back to max_position_embeddings for a missing original length.
    rope.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    values = {key: _required(rope, key) for key in _LLAMA3_KEYS}
    return theta, RopeScaling(
        "llama3", float(values["factor"]), float(values["low_freq_factor"]), float(values["high_freq_factor"]),
        int(values["original_max_position_embeddings"]),
    )


def _required(rope: dict, key: str):
    if rope.get(key) is None:
        raise UserError(f"config.json rope_parameters has no {key!r}, which its rope_type needs; add it.")
    return rope[key]


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> jax.Array:
    """float32 [head_dim // 2] inverse frequencies, scaled as `scaling` says."""
    half = head_dim // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))
    if scaling is None:
        return inv_freq
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor
    return _llama3_frequencies(inv_freq, scaling)


def _llama3_frequencies(inv_freq: jax.Array, s: RopeScaling) -> jax.Array:
    """Llama 3's scaling: wavelengths beyond original/low_freq_factor are stretched by `factor`,
    those under original/high_freq_factor kept, and the band between blended linearly in
    original/wavelength."""
    original = s.original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    long_wave = wavelen > original / s.low_freq_factor
    short_wave = wavelen < original / s.high_freq_factor
    scaled = jnp.where(long_wave, inv_freq / s.factor, inv_freq)
    smooth = (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * scaled / s.factor + smooth * scaled
    return jnp.where(~short_wave & ~long_wave, blended, scaled)


def apply_rope(x: jax.Array, positions_bt: jax.Array, theta: float, scaling: RopeScaling | None = None) -> jax.Array:
    """Rotary embedding, half-split layout (HF Llama). x: [B, T, N, Hd]; positions_bt: [B, T]."""
    half = x.shape[-1] // 2
    inv_freq = inverse_frequencies(x.shape[-1], theta, scaling)
    angles = positions_bt.astype(jnp.float32)[..., None] * inv_freq  # [B, T, half]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
