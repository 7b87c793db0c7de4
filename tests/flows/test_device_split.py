"""A slice split into a sampler group and a trainer group (slow tier): `grpo train` on 4
host devices, 2 sampling and 2 training, rollout.max_staleness=1. The rollout of step
k+1 runs on the sampler group while the update of step k runs on the trainer group, as
the timestamps each group's dispatch thread records show; a SIGKILL in that rollout
resumes to the params of the uninterrupted run."""
import datetime
import json
import signal
import sqlite3

import pytest

from test_resume import params_sha, train
from train_helpers import write_tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def split_config(tmp_path):
    return write_tiny_config(tmp_path / "split.yaml", "device split test config",
                             train={"steps": 3, "ppo_epochs": 2},  # an update long enough to overlap on a tiny model
                             rollout={"max_staleness": 1, "batch_size": 8, "n": 4, "max_new_tokens": 128},
                             mesh={"sampler_devices": 2})


def overlapping_steps(records: list[dict]) -> list[int]:
    """Steps k whose update ran while the rollout of step k+1 ran (on the other group)."""
    return [k for k in range(len(records) - 1)
            if records[k + 1]["sampler_busy_from_unix"] < records[k]["trainer_busy_until_unix"]
            and records[k]["trainer_busy_from_unix"] < records[k + 1]["sampler_busy_until_unix"]]


def prefect_task_runs(prefect_home) -> dict[str, tuple[datetime.datetime, datetime.datetime]]:
    """{task run name: (start, end)} as the run's Prefect server recorded them (what its UI
    draws), read from the embedded server's database after the run. A rollout sampled
    ahead runs again in its own step's flow as a cache hit under the same name: the first
    run of a name is the one that sampled."""
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        rows = db.execute("select name, start_time, end_time from task_run where start_time is not null "
                          "order by start_time").fetchall()
    runs = {}
    for name, start, end in rows:
        runs.setdefault(name, (datetime.datetime.fromisoformat(start), datetime.datetime.fromisoformat(end)))
    return runs


def test_the_next_rollout_samples_on_the_sampler_group_while_the_update_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    done = train(split_config(tmp_path), tmp_path / "run")
    assert done.returncode == 0, done.stdout[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout_params_version"] for r in records] == [0, 0, 1]
    assert all(r["weights_reshard_seconds"] > 0 for r in records)  # each rollout's params came across
    assert overlapping_steps(records), [{k: v for k, v in r.items() if "busy" in k} for r in records]
    # Prefect saw it too: the rollout task of step k+1 and the update task of step k ran at once.
    runs = prefect_task_runs(tmp_path / "prefect-run")
    assert any(runs[f"rollout-{k + 1}"][0] < runs[f"update-{k}"][1] and runs[f"update-{k}"][0] < runs[f"rollout-{k + 1}"][1]
               for k in overlapping_steps(records)), runs
    # The rollout of step 2 dies beside update 1; the checkpoint after update 1 waits for it.
    killed = train(split_config(tmp_path), tmp_path / "killed", fault="rollout:2:kill")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    resumed = train(split_config(tmp_path), tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert params_sha(tmp_path / "killed") == params_sha(tmp_path / "run")
