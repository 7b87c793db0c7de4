"""Crash and resume with rollout.max_staleness=1 (slow tier): step k's flow samples step
k+1's rollout before step k's update, so a SIGKILL in any phase (the rollout sampled
ahead, the reward and advantage before it is submitted, the update beside it, the
checkpoint write after it) resumes to the params of an uninterrupted run, and whatever
was already on disk is reused, not sampled again."""
import json
import signal

import pytest

from test_resume import artifact_shas, params_sha, train
from train_helpers import write_tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

# (fault, whether step 2's rollout (sampled ahead in step 1's flow) is on disk when it fires)
FAULTS = [("reward:1:kill", False), ("advantage:1:kill", False), ("rollout:2:kill", False),
          ("update:1:kill", True), ("checkpoint:1:kill", True)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stale")
    config = write_tiny_config(tmp / "stale.yaml", "one-step-stale resume test config",
                               train={"steps": 3}, rollout={"max_staleness": 1})
    done = train(config, tmp / "straight")
    assert done.returncode == 0, done.stdout[-3000:]
    records = [json.loads(line) for line in (tmp / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout_params_version"] for r in records] == [0, 0, 1]
    return config, params_sha(tmp / "straight")


@pytest.mark.parametrize("fault,ahead_on_disk", FAULTS, ids=[f for f, _ in FAULTS])
def test_sigkill_in_each_phase_resumes_to_the_same_params(fault, ahead_on_disk, straight, tmp_path):
    config, expected = straight
    run_dir = tmp_path / "run"
    killed = train(config, run_dir, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    step1, ahead = artifact_shas(run_dir, 1), artifact_shas(run_dir, 2)
    assert ("rollout.parquet" in ahead) == ahead_on_disk, (fault, ahead)
    assert "rollout.parquet" in step1 and ("update.json" in step1) == fault.startswith("checkpoint"), (fault, step1)
    resumed = train(config, run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    after1, done1 = artifact_shas(run_dir, 1), {n: s for n, s in step1.items() if n.endswith(".parquet")}
    assert {n: after1[n] for n in done1} == done1  # step 1's finished phases reused (an update replays)
    assert {n: s for n, s in artifact_shas(run_dir, 2).items() if n in ahead} == ahead  # not resampled
    assert params_sha(run_dir) == expected, fault
