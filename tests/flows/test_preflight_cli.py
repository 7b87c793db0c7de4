"""`grpo preflight`: the historical OOM is predicted, shipped configs fit, suggestions really fit."""
import json
from pathlib import Path

import pytest

from flows.cli.main import main
from flows.preflight import resolve_model_config, run_preflight, with_overrides
from grpo_core.errors import UserError
from grpo_core.models.config import PRESETS
from schemas import load_run_config

ROOT = Path(__file__).resolve().parents[2]
CFG_7B = str(ROOT / "configs" / "grpo_gsm8k_qwen25_7b_bs128_steps100.yaml")
CFG_3B = str(ROOT / "configs" / "grpo_gsm8k_qwen25_3b_bs128_steps100.yaml")


def preflight(capsys, *args) -> tuple[int, str, str]:
    code = main(["preflight", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_historical_7b_1024_sequences_does_not_fit_and_blames_the_prefill_kv_cache(capsys):
    code, out, err = preflight(capsys, "--config", CFG_7B, "--tpu", "v6e-8", "--set", "rollout.batch_size=128")
    assert code == 3
    assert "DOES NOT FIT: prefill" in out and "largest part: prefill kv cache" in out
    assert "prefill kv cache" in err and "Traceback" not in err
    assert "fits with: --set rollout.batch_size=" in out


def test_suggested_changes_fit_when_re_estimated():
    cfg = load_run_config(CFG_7B, ["rollout.batch_size=128"])
    report = run_preflight(cfg, "v6e-8")
    assert not report.fits and report.culprit == ("prefill", "kv cache")
    assert 1 <= len(report.suggestions) <= 2
    for overrides, estimate in report.suggestions:
        again = run_preflight(with_overrides(cfg, overrides), "v6e-8")
        assert again.fits and again.estimate.peak_bytes == estimate.peak_bytes


def test_update_culprit_is_named_when_micro_batching_is_off():
    cfg = load_run_config(CFG_3B, ["train.micro_batch_size=null", "rollout.batch_size=64"])
    report = run_preflight(cfg, "v6e-8")
    assert not report.fits and report.culprit == ("update", "logits")
    assert any(o[0].startswith("train.micro_batch_size=") for o, _ in report.suggestions)


@pytest.mark.parametrize("args", [
    ("--config", CFG_3B, "--tpu", "v6e-8"),
    ("--config", CFG_3B, "--tpu", "v6e-8", "--set", "rollout.batch_size=16", "--set", "rollout.n=8"),
    ("--config", CFG_7B, "--tpu", "v6e-8"),
    ("--config", str(ROOT / "configs" / "smoke_v6e8.yaml"), "--tpu", "v6e-8"),
])
def test_shipped_configs_fit(capsys, args):
    code, out, err = preflight(capsys, *args)
    assert code == 0, out + err
    assert "FITS: peak" in out and "headroom" in out


def test_bad_accelerator_is_a_user_error(capsys):
    code, _, err = preflight(capsys, "--config", CFG_3B, "--tpu", "v9-8")
    assert code == 2 and "unknown accelerator 'v9-8'" in err and "Traceback" not in err


def test_model_resolution(tmp_path):
    assert resolve_model_config("Qwen/Qwen2.5-7B-Instruct") == PRESETS["qwen2.5-7b"]
    assert resolve_model_config("qwen/qwen2.5-0.5b") == PRESETS["qwen2.5-0.5b"]
    assert resolve_model_config("smollm2-135m-instruct") == PRESETS["smollm2-135m"]
    (tmp_path / "config.json").write_text(json.dumps(PRESETS["tiny-qwen2"].to_hf()))
    assert resolve_model_config(str(tmp_path)) == PRESETS["tiny-qwen2"]
    with pytest.raises(UserError, match="model.name_or_path"):
        resolve_model_config("meta-llama/Llama-3.1-8B")
