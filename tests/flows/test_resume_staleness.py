"""Crash and resume with rollout.max_staleness=1 (slow tier): step k's flow samples step
k+1's rollout before step k's update, so a SIGKILL in the rollout sampled ahead and in the
checkpoint write after the update that follows it resumes to the params of an
uninterrupted run."""
import json
import signal

import pytest

from test_resume import artifact_shas, params_sha, train
from train_helpers import write_tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def stale_config(tmp_path):
    return write_tiny_config(tmp_path / "stale.yaml", "one-step-stale resume test config",
                             train={"steps": 3}, rollout={"max_staleness": 1})


def test_sigkill_around_the_rollout_sampled_ahead_resumes_to_the_same_params(tmp_path):
    config = stale_config(tmp_path)
    straight = train(config, tmp_path / "straight")
    assert straight.returncode == 0, straight.stdout[-3000:]
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout_params_version"] for r in records] == [0, 0, 1]
    for fault in ("rollout:2:kill", "checkpoint:1:kill"):
        run_dir = tmp_path / fault.split(":")[0]
        killed = train(config, run_dir, fault=fault)
        assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
        ahead = artifact_shas(run_dir, 2)
        # the rollout sampled ahead is on disk before the update of the step that sampled it
        assert ("rollout.parquet" in ahead) == (fault != "rollout:2:kill"), (fault, ahead)
        resumed = train(config, run_dir)
        assert resumed.returncode == 0, resumed.stdout[-3000:]
        assert {n: s for n, s in artifact_shas(run_dir, 2).items() if n in ahead} == ahead  # not resampled
        assert params_sha(run_dir) == params_sha(tmp_path / "straight"), fault
