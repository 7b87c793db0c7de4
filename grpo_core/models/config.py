"""Architecture hyper-parameters of the Llama / Qwen2 / Qwen3 decoder family.

`ModelConfig` is frozen and hashable, so it can be a static argument of `jax.jit`
(the sampler and the trainer key their compiled functions on it). It reads and writes
HF `config.json` dicts; transformers 5 moved `rope_theta` into `rope_parameters`, so
both spellings are read and both are written (grpo_core.models.rope reads RoPE scaling).

The three families differ in two places: Qwen2 always has q/k/v biases, and Qwen3 puts
an RMSNorm over each query and key head before RoPE (`qk_norm`) and sizes its heads
independently of the hidden size. Everything else is one decoder.
"""
from __future__ import annotations

import dataclasses

from grpo_core.errors import UserError
from grpo_core.models.rope import RopeScaling, rope_from_hf

ARCHITECTURES = ("llama", "qwen2", "qwen3")
_HF_ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


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
    rope_scaling: RopeScaling | None = None

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
    def qk_norm(self) -> bool:
        """Whether queries and keys get a per-head RMSNorm before RoPE (Qwen3)."""
        return self.architecture == "qwen3"

    @property
    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        nq, nkv = self.num_attention_heads, self.num_key_value_heads
        attn = d * hd * (2 * nq + 2 * nkv) + (hd * (nq + 2 * nkv) if self.attention_bias else 0)
        attn += 2 * hd if self.qk_norm else 0
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else d * self.vocab_size
        return self.vocab_size * d + self.num_hidden_layers * layer + d + head

    @classmethod
    def from_hf(cls, hf: dict) -> ModelConfig:
        """Build from an HF config.json dict (LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM)."""
        arch = hf.get("model_type", "llama")
        if arch not in ARCHITECTURES:
            raise UserError(f"config.json model_type {arch!r} is not supported; use a checkpoint whose model_type "
                            f"is {', '.join(ARCHITECTURES[:-1])} or {ARCHITECTURES[-1]}.")
        if hf.get("hidden_act", "silu") != "silu":
            raise UserError(f"config.json hidden_act {hf['hidden_act']!r} is not supported; only 'silu' is.")
        if arch == "qwen3" and (hf.get("use_sliding_window") or set(hf.get("layer_types") or ()) - {"full_attention"}):
            raise UserError("config.json use_sliding_window/layer_types asks for sliding-window attention, which is "
                            "not supported; set use_sliding_window to false.")
        rope_theta, rope_scaling = rope_from_hf(hf)
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
            rope_theta=rope_theta,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases; Llama and Qwen3 only when attention_bias is set.
            attention_bias=arch == "qwen2" or bool(hf.get("attention_bias", False)),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=hf.get("pad_token_id"),
            architecture=arch,
            rope_scaling=rope_scaling,
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
        if self.rope_scaling is not None:
            # Both spellings again: transformers 5 reads rope_parameters, earlier versions rope_scaling.
            hf["rope_parameters"] = {**self.rope_scaling.to_hf(), "rope_theta": self.rope_theta}
            hf["rope_scaling"] = dict(hf["rope_parameters"])
        if self.architecture != "qwen2":
            hf["attention_bias"] = self.attention_bias
        if self.architecture == "llama":
            hf["mlp_bias"] = False
        if self.architecture == "qwen3":
            hf["use_sliding_window"] = False
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


def _qwen3(d, layers, heads, ffn, tied) -> ModelConfig:
    # Qwen3 (the post-trained "hybrid thinking" checkpoints): 8 kv heads of 128 at every size;
    # turns end in <|im_end|> (151645), documents in <|endoftext|> (151643).
    return ModelConfig(
        vocab_size=151936, hidden_size=d, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=8, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=tied, attention_bias=False, max_position_embeddings=40960, bos_token_id=151643,
        eos_token_ids=(151645, 151643), pad_token_id=151643, architecture="qwen3",
    )


def _llama3(d, layers, heads, head_dim, ffn, tied, factor) -> ModelConfig:
    # Llama 3.1 / 3.2 Instruct: 128k context through llama3 RoPE scaling of an 8k original;
    # stops on <|end_of_text|>, <|eom_id|> and <|eot_id|>; no pad token.
    return ModelConfig(
        vocab_size=128256, hidden_size=d, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=8, head_dim=head_dim, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, attention_bias=False, max_position_embeddings=131072,
        bos_token_id=128000, eos_token_ids=(128001, 128008, 128009), architecture="llama",
        rope_scaling=RopeScaling("llama3", factor, 1.0, 4.0, 8192),
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
    "qwen3-0.6b": _qwen3(1024, 28, 16, 3072, tied=True),
    "qwen3-1.7b": _qwen3(2048, 28, 16, 6144, tied=True),
    "qwen3-4b": _qwen3(2560, 36, 32, 9728, tied=True),
    "qwen3-8b": _qwen3(4096, 36, 32, 12288, tied=False),
    "qwen3-14b": _qwen3(5120, 40, 40, 17408, tied=False),
    "qwen3-32b": _qwen3(5120, 64, 64, 25600, tied=False),
    "llama-3.2-1b": _llama3(2048, 16, 32, 64, 8192, tied=True, factor=32.0),
    "llama-3.2-3b": _llama3(3072, 28, 24, 128, 8192, tied=True, factor=32.0),
    "llama-3.1-8b": _llama3(4096, 32, 32, 128, 14336, tied=False, factor=8.0),
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
    # head_dim 16 independent of hidden_size / heads (56 / 4 = 14), as in Qwen3.
    "tiny-qwen3": ModelConfig(
        vocab_size=261, hidden_size=56, intermediate_size=88, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
        max_position_embeddings=512, bos_token_id=1, eos_token_ids=(2,), pad_token_id=0,
        architecture="qwen3",
    ),
    # Its 8 frequencies fall in all three bands of llama3 scaling (wavelengths under 16, from
    # 16 to 64, over 64 positions), and the original context (64) is shorter than a test prompt
    # plus completion, so the scaling changes the logits.
    "tiny-llama3": ModelConfig(
        vocab_size=257, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=False,
        max_position_embeddings=1024, bos_token_id=1, eos_token_ids=(2,), pad_token_id=0,
        architecture="llama", rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 64),
    ),
}
