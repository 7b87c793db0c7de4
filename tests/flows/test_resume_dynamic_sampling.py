"""Crash and resume with DAPO dynamic sampling (slow tier): the rollout phase's rounds are
one artifact under one cache key, so a kill after it never samples any round again."""
import json
import signal

import pytest

from test_resume import artifact_shas, params_sha, train
from train_helpers import write_tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def ds_config(tmp_path):
    return write_tiny_config(tmp_path / "ds.yaml", "dynamic-sampling resume test config", train={"steps": 3},
                             rollout={"dynamic_sampling": {"enabled": True, "max_rounds": 3}})


def test_kill_after_a_dynamic_sampling_rollout_resumes_without_resampling(tmp_path):
    config = ds_config(tmp_path)
    straight = train(config, tmp_path / "straight")
    assert straight.returncode == 0, straight.stdout[-3000:]
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all("dynamic_sampling_rounds" in r and "rows_run" in r for r in records)
    run_dir = tmp_path / "run"
    killed = train(config, run_dir, fault="reward:1:kill")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    before = artifact_shas(run_dir, 1)
    assert set(before) == {"rollout.parquet"}
    resumed = train(config, run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert artifact_shas(run_dir, 1)["rollout.parquet"] == before["rollout.parquet"]
    step1 = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1]
    assert "time_rollout" not in step1  # a cache hit: no round sampled again
    assert params_sha(run_dir) == params_sha(tmp_path / "straight")
