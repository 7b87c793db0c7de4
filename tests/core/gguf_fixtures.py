"""Tiny GGUF files written the way llama.cpp's converter writes them, for conversion tests.

The HF state is random; `write_tiny_gguf` applies llama.cpp's Q/K row permutation (llama
only), stores most tensors as F32 (exactly comparable) and the MLP gate as Q8_0 (the
dequantization path), and adds a small byte-level BPE vocabulary with merges, control
tokens and a ChatML chat template.
"""
import gguf
import numpy as np
from transformers.convert_slow_tokenizer import bytes_to_unicode

from grpo_core.models.config import ModelConfig

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QUANTIZED = ("ffn_gate.weight",)


def tiny_tokens() -> list[str]:
    return SPECIALS + sorted(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES]


def tiny_config(architecture: str) -> ModelConfig:
    return ModelConfig(
        vocab_size=len(tiny_tokens()), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=architecture == "llama", attention_bias=architecture == "qwen2",
        max_position_embeddings=256, bos_token_id=1, eos_token_ids=(2,), pad_token_id=2, architecture=architecture,
    )


def random_hf_state(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """HF name -> random float32 torch-layout tensor for `cfg`."""
    rng = np.random.default_rng(seed)
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, D)
    layer = {"input_layernorm.weight": (D,), "post_attention_layernorm.weight": (D,),
             "self_attn.q_proj.weight": (q, D), "self_attn.k_proj.weight": (kv, D),
             "self_attn.v_proj.weight": (kv, D), "self_attn.o_proj.weight": (D, q),
             "mlp.gate_proj.weight": (F, D), "mlp.up_proj.weight": (F, D), "mlp.down_proj.weight": (D, F)}
    if cfg.attention_bias:
        layer.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,)})
    if cfg.qk_norm:
        layer.update({"self_attn.q_norm.weight": (cfg.head_dim,), "self_attn.k_norm.weight": (cfg.head_dim,)})
    for i in range(cfg.num_hidden_layers):
        shapes.update({f"model.layers.{i}.{k}": s for k, s in layer.items()})
    return {k: (0.2 * rng.standard_normal(s) + (1.0 if k.endswith("norm.weight") else 0.0)).astype(np.float32)
            for k, s in shapes.items()}


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's rotary permutation of Q/K rows (half-split -> interleaved)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def gguf_name(hf_name: str) -> str:
    if hf_name in _TOP:
        return _TOP[hf_name]
    _, _, i, rest = hf_name.split(".", 3)
    return f"blk.{i}.{_GGUF_NAMES[rest]}"


def _add_metadata(writer: gguf.GGUFWriter, cfg: ModelConfig) -> None:
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.head_dim)
    if cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size:
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
    tokens = tiny_tokens()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def llama_cpp_rope_factors(head_dim: int, theta: float, factor: float, low: float, high: float,
                           original: int) -> np.ndarray:
    """The rope_freqs.weight divisors llama.cpp's converter writes for llama3 RoPE scaling."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
    out = []
    for freq in freqs:
        wavelen = 2 * np.pi / freq
        if wavelen < original / high:
            out.append(1.0)
        elif wavelen > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, np.float32)


def write_tiny_gguf(path, cfg: ModelConfig, state: dict[str, np.ndarray], rope_factors=None, metadata=None) -> None:
    """Write `state` (HF names, torch layout) as a GGUF of `cfg.architecture` at `path`;
    `rope_factors` becomes rope_freqs.weight, `metadata(writer)` adds keys."""
    writer = gguf.GGUFWriter(str(path), cfg.architecture)
    _add_metadata(writer, cfg)
    if metadata is not None:
        metadata(writer)
    if rope_factors is not None:
        writer.add_tensor("rope_freqs.weight", np.asarray(rope_factors, np.float32))
    heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}
    for hf_name, array in state.items():
        name = gguf_name(hf_name)
        kind = name.split(".")[-2]
        if cfg.architecture == "llama" and kind in heads:
            array = llama_cpp_permute(array, heads[kind])
        if name.endswith(QUANTIZED):
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def assert_tensors_match(converted: dict, state: dict) -> None:
    """Every converted tensor equals the original (quantized ones within one Q8_0 step)."""
    assert set(converted) == set(state)
    for name, original in state.items():
        if gguf_name(name).endswith(QUANTIZED):  # Q8_0: error below one quantization step
            step = np.abs(original).max(axis=-1, keepdims=True) / 127
            assert np.all(np.abs(converted[name] - original) <= step), name
        else:
            np.testing.assert_array_equal(converted[name], original, err_msg=name)
