"""Architecture hyper-parameters of the Llama / Qwen2 decoder family.

`ModelConfig` is frozen and hashable, so it can be a static argument of `jax.jit`
(the sampler and the trainer key their compiled functions on it). It reads and writes
HF `config.json` dicts; transformers 5 moved `rope_theta` into `rope_parameters`, so
both spellings are read and both are written.
"""
from __future__ import annotations

import dataclasses

from grpo_core.errors import UserError

ARCHITECTURES = ("llama", "qwen2")
_HF_ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of one decoder; field names follow HF config.json."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 4096
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    architecture: str = "llama"

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"model architecture {self.architecture!r} is not supported; use one of {ARCHITECTURES}.")
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads} in the model config."
            )
        object.__setattr__(self, "eos_token_ids", tuple(int(e) for e in self.eos_token_ids))

    @property
    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        nq, nkv = self.num_attention_heads, self.num_key_value_heads
        attn = d * hd * (2 * nq + 2 * nkv) + (hd * (nq + 2 * nkv) if self.attention_bias else 0)
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else d * self.vocab_size
        return self.vocab_size * d + self.num_hidden_layers * layer + d + head

    @classmethod
    def from_hf(cls, hf: dict) -> ModelConfig:
        """Build from an HF config.json dict (LlamaForCausalLM / Qwen2ForCausalLM)."""
        arch = hf.get("model_type", "llama")
        if arch not in ARCHITECTURES:
            raise UserError(f"config.json model_type {arch!r} is not supported; use a llama or qwen2 model.")
        if hf.get("hidden_act", "silu") != "silu":
            raise UserError(f"config.json hidden_act {hf['hidden_act']!r} is not supported; only 'silu' is.")
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise UserError("config.json uses RoPE scaling, which is not supported; use a model without rope_scaling.")
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,))
        heads = hf["num_attention_heads"]
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases; Llama only when attention_bias is set.
            attention_bias=arch == "qwen2" or bool(hf.get("attention_bias", False)),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=hf.get("pad_token_id"),
            architecture=arch,
        )

    def to_hf(self) -> dict:
        """HF config.json dict that `from_hf` reads back to an equal config."""
        hf = {
            "architectures": [_HF_ARCH[self.architecture]],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0],
            "pad_token_id": self.pad_token_id,
        }
        if self.architecture == "llama":
            hf["attention_bias"] = self.attention_bias
            hf["mlp_bias"] = False
        return hf


def _qwen25(d, layers, heads, kv, ffn, vocab=151936, tied=True) -> ModelConfig:
    # Instruct checkpoints stop on <|im_end|> (151645) and <|endoftext|> (151643).
    return ModelConfig(
        vocab_size=vocab, hidden_size=d, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=d // heads,
        rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=tied, attention_bias=True,
        max_position_embeddings=32768, bos_token_id=151643, eos_token_ids=(151645, 151643),
        pad_token_id=151643, architecture="qwen2",
    )


PRESETS: dict[str, ModelConfig] = {
    "smollm2-135m": ModelConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=False,
        max_position_embeddings=8192, bos_token_id=1, eos_token_ids=(2,), pad_token_id=2,
        architecture="llama",
    ),
    "qwen2.5-0.5b": _qwen25(896, 24, 14, 2, 4864),
    "qwen2.5-1.5b": _qwen25(1536, 28, 12, 2, 8960),
    "qwen2.5-3b": _qwen25(2048, 36, 16, 2, 11008),
    "qwen2.5-7b": _qwen25(3584, 28, 28, 4, 18944, vocab=152064, tied=False),
    # Tiny test models: odd sizes and GQA so shape bugs cannot hide behind symmetry.
    "tiny-llama": ModelConfig(
        vocab_size=259, hidden_size=72, intermediate_size=120, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=12, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=False,
        max_position_embeddings=512, bos_token_id=1, eos_token_ids=(2,), pad_token_id=0,
        architecture="llama",
    ),
    "tiny-qwen2": ModelConfig(
        vocab_size=263, hidden_size=60, intermediate_size=100, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=3, head_dim=10, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=True,
        max_position_embeddings=512, bos_token_id=1, eos_token_ids=(2, 3), pad_token_id=0,
        architecture="qwen2",
    ),
}
