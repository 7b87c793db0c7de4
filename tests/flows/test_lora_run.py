"""LoRA runs as a user meets them: `grpo export` (merged and --adapter, loaded by
transformers and peft), step 0 sampling, a changed base on resume, bad `model.lora` values."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from export_helpers import byte_tokenizer_dir
from grpo_core import lora
from grpo_core.checkpoint import Checkpoints
from grpo_core.errors import UserError
from grpo_core.models.loading import load_pretrained, save_pretrained
from grpo_core.optim import build_optimizer
from grpo_core.sampling import generate
from schemas.loading import config_to_yaml
from tasks.model_source import resolve_model
from tasks.session import TrainSession, base_fingerprint
from train_helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]
LORA = ["model.lora.rank=4", "model.lora.alpha=8", "model.lora.targets=[wq,wv,wo,w_up,w_down]"]


def grpo(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli.main", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A LoRA run directory as `grpo train` leaves it: config, one checkpoint of trained-looking
    adapters (B != 0) with the base's fingerprint. Returns (run_dir, base params, adapters)."""
    root = tmp_path_factory.mktemp("lora")
    cfg = tiny_config(f"model.tokenizer={byte_tokenizer_dir(root / 'tokenizer')}", *LORA)
    run_dir = root / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    base = resolve_model(cfg.model, cfg.train.seed, None, cfg.data.chat_template)
    spec = lora.spec_from_config(cfg.model.lora)
    adapters = lora.init_adapters(base.config, spec, jax.random.PRNGKey(5))
    keys = iter(jax.random.split(jax.random.PRNGKey(6), 32))
    adapters = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(next(keys), x.shape), adapters)
    checkpoints = Checkpoints(run_dir / "checkpoints")
    checkpoints.save(1, adapters, build_optimizer(cfg.train.optimizer, 2).init(adapters),
                     {"next_step": 1, "base_sha256": base_fingerprint(base.params), "base_dtype": "float32"})
    checkpoints.close()
    return run_dir, base, adapters


@pytest.mark.torch
def test_exported_adapter_loads_in_peft_and_decodes_like_the_merged_export(lora_run, tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    import transformers

    run_dir, base, adapters = lora_run
    for args in (["--adapter", str(run_dir), str(tmp_path / "adapter")], [str(run_dir), str(tmp_path / "merged")]):
        done = grpo("export", *args)
        assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["lora_dropout"] == 0.0
    assert config["target_modules"] == ["down_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert config["base_model_name_or_path"] == "tiny-llama"
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (4, base.config.hidden_size)
    assert tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].shape == (base.config.hidden_size, 4)
    assert len(tensors) == 2 * 5 * base.config.num_hidden_layers  # adapters only: no base weight

    save_pretrained(base.params, base.config, tmp_path / "base")  # weights only: peft needs no tokenizer
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(hf_base, tmp_path / "adapter").eval()
    merged = load_pretrained(tmp_path / "merged")
    prompts = [list(b"What is 2+3?"), list(b"Hi there")]
    greedy = generate(merged, prompts, 10, temperature=0.0, stop_at_eos=False)
    changed = generate(base, prompts, 10, temperature=0.0, stop_at_eos=False)
    assert greedy.tokens != changed.tokens  # the adapters change what is decoded
    for prompt, completion in zip(prompts, greedy.tokens):
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                 dtype=torch.long), do_sample=False, max_new_tokens=10, min_new_tokens=10)
        assert out[0, len(prompt):].tolist() == completion


def test_adapter_export_of_a_full_run_is_one_sentence(lora_run, tmp_path):
    run_dir = tmp_path / "full"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config_to_yaml(tiny_config()))
    done = grpo("export", "--adapter", str(run_dir), str(tmp_path / "out"))
    assert done.returncode == 2 and "model.lora is off" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("option", [("--dtype", "bfloat16"), ("--max-shard-size", "1GB")])
def test_adapter_export_refuses_the_merged_models_options(lora_run, tmp_path, option):
    done = grpo("export", "--adapter", *option, str(lora_run[0]), str(tmp_path / "out"))
    assert done.returncode == 2 and option[0] in done.stderr and not (tmp_path / "out").exists()
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("setting, field", [("model.lora.rank=-1", "model.lora.rank"),
                                            ("model.lora.alpha=0", "model.lora.alpha"),
                                            ("model.lora.targets=[wq,q_proj]", "model.lora.targets")])
def test_bad_lora_config_is_one_sentence_and_exit_2(setting, field):
    bad = grpo("print-config", "--config", "configs/quickstart_lora.yaml", "--devices", "1", "--set", setting)
    assert bad.returncode == 2 and field in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_step_0_samples_what_the_base_samples_and_a_changed_base_is_refused(tmp_path, monkeypatch):
    full = TrainSession.open(tiny_config(), tmp_path / "full")
    try:
        expected = full.rollout(0).column("completion_ids").to_pylist()
    finally:
        full.close()
    session = TrainSession.open(tiny_config(*LORA), tmp_path / "lora")
    try:
        assert session.rollout(0).column("completion_ids").to_pylist() == expected
        session.save_checkpoint(0)
        session.wait_for_checkpoints()
    finally:
        session.close()

    import tasks.session

    real = tasks.session.resolve_model

    def other_base(*args, **kw):
        model = real(*args, **kw)
        model.params = jax.tree.map(lambda x: x * 1.01, model.params)
        return model

    monkeypatch.setattr(tasks.session, "resolve_model", other_base)
    with pytest.raises(UserError, match="trained on other base weights than model.name_or_path='tiny-llama'"):
        TrainSession.open(tiny_config(*LORA), tmp_path / "lora")


def test_eval_reads_a_lora_run_as_its_merged_model(lora_run):
    from grpo_core.sharding import make_mesh
    from tasks.eval_models import load_eval_model, resolve_source

    run_dir, base, adapters = lora_run
    mesh = make_mesh({"fsdp": 2}, devices=jax.devices()[:2])
    model = load_eval_model(resolve_source(str(run_dir)), tiny_config(), mesh)
    spec = lora.spec_from_config(tiny_config(*LORA).model.lora)
    expected = lora.merge(base.params, adapters, spec)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(model.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7,
                                   err_msg=jax.tree_util.keystr(path))
    assert not np.allclose(np.asarray(model.params["layers"]["wq"]), np.asarray(base.params["layers"]["wq"]))
