"""`grpo train` with a tiny random Qwen3 (slow tier): a SIGKILL in the middle step's update,
then a rerun, ends with the params and per-step rewards of an uninterrupted run, as the
Llama/Qwen2 runs of tests/flows/test_resume.py do. Runs on the test session's 8 host devices."""
import json
import signal

import pytest

from test_resume import artifact_shas, params_sha, train
from train_helpers import write_tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def qwen3_config(tmp_path):
    return write_tiny_config(tmp_path / "qwen3.yaml", "tiny Qwen3 resume test config",
                             model={"name_or_path": "tiny-qwen3"}, train={"steps": 3})


def _rewards(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["reward_mean"]) for r in records]


def test_tiny_qwen3_resumes_exactly_after_a_sigkill(tmp_path):
    config = qwen3_config(tmp_path)
    straight = train(config, tmp_path / "straight")
    assert straight.returncode == 0, straight.stdout[-3000:]
    run_dir = tmp_path / "run"
    killed = train(config, run_dir, fault="update:1:kill")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    before = artifact_shas(run_dir, 1)
    assert set(before) == {"rollout.parquet", "reward.parquet", "advantage.parquet"}
    resumed = train(config, run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    after = artifact_shas(run_dir, 1)
    assert {name: after[name] for name in before} == before  # reused, not sampled again
    assert params_sha(run_dir) == params_sha(tmp_path / "straight")
    assert _rewards(run_dir) == _rewards(tmp_path / "straight")
    assert len(_rewards(run_dir)) == 3
