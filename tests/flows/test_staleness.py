"""rollout.max_staleness=1 on a tiny random model: which params each rollout samples with,
recorded in its manifest, and a deterministic run."""
import asyncio
import json

import pytest

from grpo_core.artifacts import sha256_file
from train_helpers import tiny_config

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(run_dir, staleness: int):
    from flows.train import train_flow

    cfg = tiny_config("train.steps=3", "checkpoint.every_steps=3", f"rollout.max_staleness={staleness}")
    summary = asyncio.run(train_flow(config=cfg, run_dir=str(run_dir)))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rollouts = [sha256_file(run_dir / "steps" / f"step-{k:06d}" / "rollout.parquet") for k in range(3)]
    return summary["params_sha256"], [r["rollout_params_version"] for r in records], rollouts


def test_one_step_stale_rollouts_sample_the_previous_params_and_repeat_exactly(tmp_path):
    sha, versions, rollouts = run(tmp_path / "stale", 1)
    assert versions == [0, 0, 1]  # step k samples with the params step k-1's update started from
    again_sha, _, again_rollouts = run(tmp_path / "again", 1)
    assert (again_sha, again_rollouts) == (sha, rollouts)
    sync_sha, sync_versions, sync_rollouts = run(tmp_path / "sync", 0)
    assert sync_versions == [0, 1, 2]
    assert sync_rollouts[0] == rollouts[0]  # the same initial params, prompts and seed
    assert sync_rollouts[1] != rollouts[1] and sync_sha != sha  # step 1 sampled other params
