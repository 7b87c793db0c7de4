"""`grpo export`: HF-format directories transformers reads like our model, from the right
checkpoint, and the user errors that must leave everything as it was."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from export_helpers import host, make_run
from flows.cli.main import main
from flows.export import export_run
from flows.observe import params_sha256
from grpo_core.models.loading import load_pretrained
from grpo_core.models.model import Model
from grpo_core.sampling import generate
from grpo_core.tokenizer import build_prompt_ids
from tasks.run_checkpoint import load_run_checkpoint


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-qwen2"])
def run(request, tmp_path_factory):
    return make_run(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    run_dir, _ = run
    dest = tmp_path_factory.mktemp("export") / "model"
    return export_run(run_dir, dest, command="grpo export RUN DEST")


def test_export_holds_the_newest_checkpoint_and_an_hf_directory(run, exported):
    run_dir, saved = run
    assert exported.step == 2
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
            "README.md", "grpo_run_config.yaml"} <= set(exported.files)
    model = load_pretrained(exported.dest)
    for ours, theirs in zip(host(model.params), host(saved[2])):
        np.testing.assert_array_equal(ours, theirs)
    card = (exported.dest / "README.md").read_text()
    assert params_sha256(saved[2]) in card and "2 of 2 GRPO steps" in card and "grpo export RUN DEST" in card
    assert "0.050 -> 0.050" in card  # first-5 and last-5 step means of metrics.jsonl (2 steps: 0.0, 0.1)
    assert not list(exported.dest.parent.glob(".model.*")), "no staging directory is left behind"


@pytest.mark.torch
def test_transformers_matches_our_logits_and_greedy_tokens(run, exported):
    torch = pytest.importorskip("torch")
    import transformers

    ckpt = load_run_checkpoint(run[0])
    ours = ckpt.model
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported.dest, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported.dest)
    prompts = [build_prompt_ids(ours.tokenizer, q, "Be brief.", None, 64) for q in ("What is 2+3?", "Hi")]
    for prompt, question in zip(prompts, ("What is 2+3?", "Hi")):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
        hf_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert list(hf_ids) == prompt
    width = max(map(len, prompts))
    tokens = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(np.maximum(mask.cumsum(-1) - 1, 0))).logits.numpy()
    got = np.asarray(ours.logits(tokens, mask))
    np.testing.assert_allclose(got[mask == 1], ref[mask == 1], atol=1e-4, rtol=1e-4)
    greedy = generate(ours, prompts, 12, temperature=0.0)
    for prompt, completion in zip(prompts, greedy.tokens):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              do_sample=False, max_new_tokens=12)
        assert out[0, len(prompt):].tolist()[: len(completion)] == completion


def test_generation_config_carries_stop_tokens_and_training_sampling(run, exported):
    import transformers

    gen = transformers.GenerationConfig.from_pretrained(exported.dest)
    ckpt = load_run_checkpoint(run[0])
    assert list(gen.eos_token_id) == list(ckpt.model.config.eos_token_ids) and len(gen.eos_token_id) >= 2
    assert gen.do_sample and gen.temperature == ckpt.config.rollout.temperature and gen.top_k == 0


def test_step_and_dtype_options(run, tmp_path):
    run_dir, saved = run
    result = export_run(run_dir, tmp_path / "m", step=1, dtype="bfloat16")
    assert result.step == 1
    assert json.loads((tmp_path / "m" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    model = load_pretrained(tmp_path / "m", dtype="bfloat16")
    for ours, theirs in zip(host(model.params), host(saved[1])):
        np.testing.assert_array_equal(ours, theirs.astype(ours.dtype))


def test_sharded_export_round_trips(run, tmp_path):
    run_dir, saved = run
    assert main(["export", str(run_dir), str(tmp_path / "m"), "--max-shard-size", "40KB"]) == 0
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert not (tmp_path / "m" / "model.safetensors").exists()
    for ours, theirs in zip(host(load_pretrained(tmp_path / "m").params), host(saved[2])):
        np.testing.assert_array_equal(ours, theirs)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_user_errors_exit_2_and_leave_dest_alone(run, tmp_path, capsys):
    run_dir, _ = run
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), str(dest)]) == 2
    assert "--force" in _error_line(capsys) and (dest / "keep.txt").read_text() == "mine"
    assert main(["export", str(run_dir), str(tmp_path / "new"), "--step", "7"]) == 2
    line = _error_line(capsys)
    assert "no checkpoint 7" in line and "are 1, 2" in line
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())
    empty_run = tmp_path / "empty"
    empty_run.mkdir()
    (empty_run / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main(["export", str(empty_run), str(tmp_path / "new")]) == 2
    assert "no complete checkpoint" in _error_line(capsys)
    assert main(["export", str(tmp_path / "new"), str(tmp_path / "other")]) == 2
    assert "not a run directory" in _error_line(capsys)
    assert main(["export", str(run_dir), str(run_dir / "exported")]) == 2
    assert "overlaps the run directory" in _error_line(capsys)


def test_force_replaces_dest_with_a_complete_export(run, tmp_path):
    run_dir, saved = run
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "stale.safetensors").write_text("old")
    assert main(["export", str(run_dir), str(dest), "--force", "--step", "1"]) == 0
    assert not (dest / "stale.safetensors").exists()
    for ours, theirs in zip(host(load_pretrained(dest).params), host(saved[1])):
        np.testing.assert_array_equal(ours, theirs)


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax
    from orbax.checkpoint._src.path import atomicity
    from grpo_core.checkpoint import Checkpoints
    from tasks.run_checkpoint import load_run_checkpoint

    async def killed(self):  # every file is written; the commit (rename) never happens
        os.kill(os.getpid(), signal.SIGKILL)

    atomicity.AtomicRenameTemporaryPath.finalize = killed
    params = jax.tree.map(lambda x: x + 1.0, load_run_checkpoint(sys.argv[1]).model.params)
    Checkpoints(sys.argv[1] + "/checkpoints", keep=3).save(3, params, {"count": jax.numpy.zeros(())}, {"next_step": 3})
""")


def test_a_checkpoint_save_killed_half_way_is_skipped(tmp_path):
    run_dir, saved = make_run(tmp_path, "tiny-llama")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(run_dir)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("3")]
    assert leftovers and all("tmp" in name for name in leftovers), leftovers  # a half-written save is on disk
    result = export_run(run_dir, tmp_path / "m")
    assert result.step == 2
    for ours, theirs in zip(host(load_pretrained(tmp_path / "m").params), host(saved[2])):
        np.testing.assert_array_equal(ours, theirs)
    assert leftovers == [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("3")]


def test_export_while_the_run_is_training(run, tmp_path):
    from tasks.run_dir import RunLock

    run_dir, saved = run
    lock = RunLock(run_dir)  # what a live `grpo train` holds
    try:
        result = export_run(run_dir, tmp_path / "m")
    finally:
        lock.release()
    assert result.step == 2 and result.params_sha256 == params_sha256(saved[2])


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_export_of_a_two_process_run_is_the_trained_model(tmp_path):
    """Trained for real by two JAX processes (each wrote its own checkpoint shards), exported by one."""
    import transformers
    from test_multihost import run_two, wait_all, write_config

    run_dir = tmp_path / "run"
    assert wait_all(run_two(write_config(tmp_path), run_dir)) == [0, 0], (tmp_path / "run-p0.log").read_text()[-3000:]
    assert main(["export", str(run_dir), str(tmp_path / "m")]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params_sha256"] in (tmp_path / "m" / "README.md").read_text()
    ours = load_run_checkpoint(run_dir).model
    torch = pytest.importorskip("torch")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, ours.config.vocab_size, (2, 9))
    with torch.no_grad():
        ref = hf(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours.logits(tokens)), ref, atol=1e-4, rtol=1e-4)
