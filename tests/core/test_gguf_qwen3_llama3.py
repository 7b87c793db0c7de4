"""GGUF import of Qwen3 (q/k norms, head_dim of its own) and of Llama 3.x, whose RoPE scaling
llama.cpp keeps only as a rope_freqs tensor of per-frequency divisors."""
import dataclasses
import json

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from grpo_core.errors import UserError
from grpo_core.models import Model
from grpo_core.models.config import ModelConfig
from grpo_core.models.gguf_convert import convert_gguf
from grpo_core.models.hf_names import params_from_hf_state
from grpo_core.models.loading import load_pretrained
from grpo_core.models.rope import RopeScaling
from tests.core.gguf_fixtures import (
    assert_tensors_match, llama_cpp_rope_factors, random_hf_state, tiny_config, write_tiny_gguf,
)

# 4 heads of 128 beside a hidden size of 64. 128 is also Qwen3Config's default head_dim,
# which transformers' GGUF reader uses for qwen3 files (it skips attention.key_length).
QWEN3 = dataclasses.replace(tiny_config("qwen3"), head_dim=128)
LLAMA3 = dataclasses.replace(tiny_config("llama"), rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192))


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    state = random_hf_state(QWEN3)
    root = tmp_path_factory.mktemp("gguf-qwen3")
    write_tiny_gguf(root / "qwen3.gguf", QWEN3, state)
    return state, root / "qwen3.gguf", convert_gguf(root / "qwen3.gguf", root / "hf")


def test_qwen3_converts_with_its_norms_and_head_dim(qwen3):
    state, _, out = qwen3
    assert any(name.endswith("self_attn.q_norm.weight") for name in state)
    assert_tensors_match(load_file(out / "model.safetensors"), state)
    hf = json.loads((out / "config.json").read_text())
    assert hf["model_type"] == "qwen3" and hf["architectures"] == ["Qwen3ForCausalLM"]
    assert ModelConfig.from_hf(hf) == QWEN3
    model = load_pretrained(out)
    tokens = np.array([[5, 77, 200, 1, 2, 9]])
    reference = Model(QWEN3, params_from_hf_state(QWEN3, load_file(out / "model.safetensors").__getitem__))
    np.testing.assert_array_equal(np.asarray(model.logits(tokens)), np.asarray(reference.logits(tokens)))
    assert model.tokenizer.decode(model.tokenizer("the answer")["input_ids"]) == "the answer"


@pytest.mark.torch
def test_qwen3_matches_transformers_gguf_load(qwen3):
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    _, path, out = qwen3
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokens = np.random.default_rng(1).integers(0, QWEN3.vocab_size, (2, 9))
    with torch.no_grad():
        ref = hf(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(load_pretrained(out).logits(tokens)), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("original", [None, 64])
def test_llama3_rope_factors_become_rope_scaling(tmp_path, original):
    scaling = dataclasses.replace(LLAMA3.rope_scaling, original_max_position_embeddings=original or 8192)
    cfg = dataclasses.replace(LLAMA3, rope_scaling=scaling)
    state = random_hf_state(cfg)
    factors = llama_cpp_rope_factors(cfg.head_dim, cfg.rope_theta, 8.0, 1.0, 4.0, original or 8192)
    assert (factors == 1).any() and (factors == 8).any() and ((factors > 1) & (factors < 8)).any()
    metadata = None if original is None else (lambda writer: writer.add_rope_scaling_orig_ctx_len(original))
    write_tiny_gguf(tmp_path / "llama3.gguf", cfg, state, rope_factors=factors, metadata=metadata)
    out = convert_gguf(tmp_path / "llama3.gguf", tmp_path / "hf")
    hf = json.loads((out / "config.json").read_text())
    assert hf["rope_parameters"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": original or 8192,
                                     "rope_theta": 10000.0}
    assert ModelConfig.from_hf(hf) == cfg
    assert_tensors_match(load_file(out / "model.safetensors"), state)  # rope_freqs is not a weight


def test_linear_scaling_metadata_converts(tmp_path):
    cfg = tiny_config("qwen2")
    write_tiny_gguf(tmp_path / "linear.gguf", cfg, random_hf_state(cfg), metadata=lambda writer: (
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR), writer.add_rope_scaling_factor(4.0)))
    hf = json.loads((convert_gguf(tmp_path / "linear.gguf", tmp_path / "hf") / "config.json").read_text())
    assert ModelConfig.from_hf(hf).rope_scaling == RopeScaling("linear", 4.0)


def test_other_rope_scalings_are_refused(tmp_path):
    cfg = tiny_config("llama")
    state = random_hf_state(cfg)
    # Divisors of another band (low_freq_factor 2): not what the llama3 parameters give.
    odd = llama_cpp_rope_factors(cfg.head_dim, cfg.rope_theta, 8.0, 2.0, 4.0, 8192)
    write_tiny_gguf(tmp_path / "odd.gguf", cfg, state, rope_factors=odd)
    with pytest.raises(UserError, match="rope_freqs.weight is not Llama 3 RoPE scaling"):
        convert_gguf(tmp_path / "odd.gguf", tmp_path / "out")
    write_tiny_gguf(tmp_path / "yarn.gguf", cfg, state, metadata=lambda writer: (
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN), writer.add_rope_scaling_factor(4.0)))
    with pytest.raises(UserError, match="rope.scaling.type 'yarn' is not supported"):
        convert_gguf(tmp_path / "yarn.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()

