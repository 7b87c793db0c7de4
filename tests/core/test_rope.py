"""RoPE scaling and the Qwen3 / Llama 3.x configs: parsing config.json, refusals, presets,
and the inverse frequencies against transformers' own (torch)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpo_core.errors import UserError
from grpo_core.models import PRESETS, ModelConfig
from grpo_core.models.decoder import init_params, param_shapes
from grpo_core.models.rope import RopeScaling, apply_rope, inverse_frequencies, rope_from_hf

# config.json of a Llama 3.1 checkpoint as the hub ships it (transformers 4.43 spelling).
LLAMA31_HF = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
}
QWEN3_HF = {
    "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936, "hidden_size": 2560,
    "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 128, "hidden_act": "silu", "max_position_embeddings": 40960, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000, "rope_scaling": None, "attention_bias": False, "use_sliding_window": False,
    "sliding_window": None, "max_window_layers": 36, "tie_word_embeddings": True, "bos_token_id": 151643,
    "eos_token_id": 151645,
}


def test_hub_config_files_read_as_the_presets():
    llama = ModelConfig.from_hf(LLAMA31_HF)
    assert llama == PRESETS["llama-3.1-8b"]
    assert llama.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    qwen = ModelConfig.from_hf(QWEN3_HF)
    assert qwen == dataclasses.replace(PRESETS["qwen3-4b"], eos_token_ids=(151645,), pad_token_id=None)
    assert qwen.qk_norm and not qwen.attention_bias and qwen.head_dim * qwen.num_attention_heads != qwen.hidden_size


def test_transformers_5_spelling_and_linear_scaling():
    five = {k: v for k, v in LLAMA31_HF.items() if k not in ("rope_scaling", "rope_theta")}
    five["rope_parameters"] = {**LLAMA31_HF["rope_scaling"], "rope_theta": 500000.0}
    assert ModelConfig.from_hf(five) == ModelConfig.from_hf(LLAMA31_HF)
    linear = {**LLAMA31_HF, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}
    assert rope_from_hf(linear) == (500000.0, RopeScaling("linear", 2.0))
    # A missing original length falls back to max_position_embeddings, as in transformers.
    short = {**LLAMA31_HF, "rope_scaling": {k: v for k, v in LLAMA31_HF["rope_scaling"].items()
                                            if k != "original_max_position_embeddings"}}
    assert rope_from_hf(short)[1].original_max_position_embeddings == 131072


@pytest.mark.parametrize("name", ["tiny-qwen3", "tiny-llama3", "qwen3-8b", "llama-3.2-3b"])
def test_new_presets_round_trip_through_config_json(name):
    cfg = PRESETS[name]
    hf = cfg.to_hf()
    assert ModelConfig.from_hf(hf) == cfg
    assert hf["rope_parameters"]["rope_type"] == ("llama3" if cfg.rope_scaling else "default")
    if cfg.rope_scaling:
        assert hf["rope_scaling"] == hf["rope_parameters"]  # older transformers read rope_scaling


def test_existing_presets_write_the_same_config_json():
    hf = PRESETS["qwen2.5-3b"].to_hf()
    assert "rope_scaling" not in hf and "attention_bias" not in hf and "use_sliding_window" not in hf
    assert hf["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e6}
    assert PRESETS["smollm2-135m"].rope_scaling is None


@pytest.mark.parametrize("rope_type", ["dynamic", "yarn", "longrope", "proportional"])
def test_other_rope_types_are_refused_with_one_sentence(rope_type):
    hf = {**LLAMA31_HF, "rope_scaling": {"rope_type": rope_type, "factor": 4.0}}
    with pytest.raises(UserError, match=f"rope_type '{rope_type}' is not supported; use a checkpoint with"):
        ModelConfig.from_hf(hf)


@pytest.mark.parametrize("change,match", [
    ({"model_type": "mistral"}, "model_type 'mistral' is not supported"),
    ({"model_type": "qwen3", "use_sliding_window": True}, "use_sliding_window"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "has no 'low_freq_factor'"),
    ({"rope_scaling": {"rope_type": "linear"}}, "has no 'factor'"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
])
def test_unsupported_config_json_fields_name_the_field(change, match):
    with pytest.raises(UserError, match=match):
        ModelConfig.from_hf({**LLAMA31_HF, **change})


def test_published_parameter_counts():
    # Model cards: Qwen3 in two significant digits, Llama 3.x in three or four.
    billions = {"qwen3-0.6b": (0.6, 0.02), "qwen3-1.7b": (1.7, 0.02), "qwen3-4b": (4.0, 0.02),
                "qwen3-8b": (8.2, 0.02), "qwen3-14b": (14.8, 0.02), "qwen3-32b": (32.8, 0.02),
                "llama-3.2-1b": (1.24, 0.005), "llama-3.2-3b": (3.21, 0.005), "llama-3.1-8b": (8.03, 0.005)}
    for name, (expected, tolerance) in billions.items():
        assert abs(PRESETS[name].num_params / 1e9 - expected) / expected < tolerance, name


def test_qk_norm_params_only_for_qwen3():
    layers = param_shapes(PRESETS["tiny-qwen3"])["layers"]
    assert layers["q_norm"] == layers["k_norm"] == (2, 16)
    for name in ("tiny-llama", "tiny-qwen2", "tiny-llama3"):
        assert not {"q_norm", "k_norm"} & set(param_shapes(PRESETS[name])["layers"])
    cfg = PRESETS["tiny-qwen3"]
    count = sum(x.size for x in jax.tree.leaves(init_params(cfg, jax.random.key(0))))
    assert count == cfg.num_params


def test_rope_without_scaling_is_the_plain_formula():
    inv = inverse_frequencies(16, 10000.0)
    plain = 1.0 / (10000.0 ** (jnp.arange(8, dtype=jnp.float32) / 8))
    np.testing.assert_array_equal(np.asarray(inv), np.asarray(plain))


def test_llama3_scaling_keeps_short_waves_stretches_long_ones_and_blends_between():
    cfg = PRESETS["tiny-llama3"]
    plain = np.asarray(inverse_frequencies(cfg.head_dim, cfg.rope_theta))
    scaled = np.asarray(inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
    wavelen = 2 * np.pi / plain
    short, long = wavelen < 64 / 4, wavelen > 64 / 1
    assert short.any() and long.any() and (~short & ~long).any()  # the preset covers all three bands
    np.testing.assert_array_equal(scaled[short], plain[short])
    np.testing.assert_allclose(scaled[long], plain[long] / 8, rtol=1e-6)
    ratio = plain[~short & ~long] / scaled[~short & ~long]
    assert np.all((ratio > 1) & (ratio < 8))


def test_positions_inside_the_short_band_are_rotated_the_same():
    """Scaling changes only the long wavelengths, so a head_dim whose frequencies are all
    short rotates exactly as without scaling."""
    x = jax.random.normal(jax.random.key(0), (1, 5, 2, 4))
    pos = jnp.arange(5)[None]
    scaling = RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    np.testing.assert_array_equal(np.asarray(apply_rope(x, pos, 10.0, scaling)), np.asarray(apply_rope(x, pos, 10.0)))


@pytest.mark.torch
@pytest.mark.parametrize("scaling,head_dim,theta", [
    (RopeScaling("llama3", 8.0, 1.0, 4.0, 8192), 128, 500000.0),
    (RopeScaling("llama3", 32.0, 1.0, 4.0, 8192), 64, 500000.0),
    (PRESETS["tiny-llama3"].rope_scaling, 16, 10000.0),
    (RopeScaling("linear", 2.5), 32, 10000.0),
])
def test_inverse_frequencies_match_transformers(scaling, head_dim, theta):
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = transformers.LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                                  rope_parameters={**scaling.to_hf(), "rope_theta": theta})
    ref, attention_factor = ROPE_INIT_FUNCTIONS[scaling.rope_type](hf, "cpu")
    assert attention_factor == 1.0
    np.testing.assert_allclose(np.asarray(inverse_frequencies(head_dim, theta, scaling)), ref.numpy(), rtol=2e-7)


def test_memory_estimate_counts_the_qk_norms():
    from grpo_core.memory import Workload, param_bytes_per_device

    for name in ("qwen3-8b", "llama-3.1-8b"):
        w = Workload(model=PRESETS[name], param_bytes=2, prompts=16, group_size=8, max_prompt_tokens=256,
                     new_tokens=1024, micro_batch=4, remat=True, optimizer="lion")
        assert param_bytes_per_device(w, 2) == 2 * PRESETS[name].num_params
