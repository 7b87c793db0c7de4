"""`grpo train` refuses bad input before Prefect starts: exit 2, one line, no traceback."""
import subprocess
import sys
from pathlib import Path

import yaml

from tasks.run_dir import RunLock
from train_helpers import TINY

ROOT = Path(__file__).resolve().parents[2]


def train(tmp_path, *sets, run_dir=None):
    config = tmp_path / "cfg.yaml"
    config.write_text("# test\n" + yaml.safe_dump(TINY))
    run_dir = run_dir or tmp_path / "run"
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", str(config), "--run-dir", str(run_dir)]
    for item in sets:
        argv += ["--set", item]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().count("\n") == 0
    for needle in needles:
        assert needle in result.stderr


def test_missing_model_directory(tmp_path):
    result = train(tmp_path, "model.init=pretrained", f"model.name_or_path={tmp_path}/nope/model")
    assert_one_line_error(result, "model.name_or_path", "nope/model")


def test_unknown_preset_for_a_random_model(tmp_path):
    assert_one_line_error(train(tmp_path, "model.name_or_path=tiny-gpt"), "not an architecture preset", "tiny-llama")


def test_run_directory_that_cannot_be_created(tmp_path):
    (tmp_path / "taken").write_text("a file the user keeps")
    result = train(tmp_path, run_dir=tmp_path / "taken" / "run")
    assert_one_line_error(result, "--run-dir", "taken/run", "a file is in the way")
    assert (tmp_path / "taken").read_text() == "a file the user keeps"


def test_missing_data_file_and_tokenizer_fail_before_prefect_starts(tmp_path):
    result = train(tmp_path, f"data.source={tmp_path}/nope.jsonl")
    assert_one_line_error(result, "data.source", "nope.jsonl")
    result = train(tmp_path, f"model.tokenizer={tmp_path}/no-tokenizer")
    assert_one_line_error(result, "model.tokenizer", "no-tokenizer")
    assert not (tmp_path / "run" / "prefect").exists()  # refused before the flow made its cache


def test_run_directory_in_use(tmp_path):
    (tmp_path / "run").mkdir()
    lock = RunLock(tmp_path / "run")
    try:
        assert_one_line_error(train(tmp_path), "in use by another `grpo train`")
    finally:
        lock.release()


def test_batch_that_does_not_split_over_the_devices(tmp_path):
    result = train(tmp_path, "rollout.batch_size=3")
    assert_one_line_error(result, "rollout.batch_size=3", "rollout.allow_padding")
