"""`grpo print-config` through the real console script: output, exit codes, no tracebacks."""
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "grpo_gsm8k_qwen25_3b_bs128_steps100.yaml")


def grpo(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli.main", *args], capture_output=True, text=True, cwd=ROOT)


def test_print_config_shows_batch_semantics():
    out = grpo("print-config", "--config", CFG, "--devices", "8", "--processes", "1")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert doc["rollout"]["batch_size"] == 16 and doc["rollout"]["n"] == 8
    assert doc["derived"]["sequences_global_per_step"] == 128
    assert "sequences_global_per_step: 128" in out.stdout


def test_print_config_override_and_errors():
    ok = grpo("print-config", "--config", CFG, "--devices", "1", "--set", "train.optimizer.name=adamw")
    assert ok.returncode == 0 and yaml.safe_load(ok.stdout)["train"]["optimizer"]["name"] == "adamw"
    bad = grpo("print-config", "--config", CFG, "--devices", "1", "--set", "train.optimizer.name=adamz")
    assert bad.returncode == 2
    assert "train.optimizer.name" in bad.stderr and "'lion', 'adamw' or 'sgd'" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
    typo = grpo("print-config", "--config", CFG, "--devices", "1", "--set", "rollout.bach_size=3")
    assert typo.returncode == 2 and "rollout.bach_size" in typo.stderr and "Traceback" not in typo.stderr
    missing = grpo("print-config", "--config", "nope.yaml")
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr and "Traceback" not in missing.stderr
