"""Crash and resume (slow tier): SIGKILL inside each phase of a middle step, then rerun.

The rerun must finish, reuse the killed step's earlier-phase artifacts unchanged (same
sha256) and end with the same params (summary.json params_sha256) as an uninterrupted
run with the same seed. Also a SIGKILL while a checkpoint is written in the background
(its update finished and cached, its checkpoint not committed), an external kill -9, and
the replay path of a checkpoint interval > 1 (cached advantage artifacts replayed through
`update`).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from grpo_core.artifacts import sha256_file
from train_helpers import TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
PHASES = ("rollout", "reward", "advantage", "update")


def write_config(tmp_path: Path, **changes) -> Path:
    body = json.loads(json.dumps(TINY))
    body["train"]["steps"] = changes.pop("steps", 3)
    body["checkpoint"]["every_steps"] = changes.pop("every_steps", 1)
    path = tmp_path / f"cfg-{body['train']['steps']}-{body['checkpoint']['every_steps']}.yaml"
    path.write_text("# resume test config\n" + yaml.safe_dump(body))
    return path


def train(config: Path, run_dir: Path, fault: str | None = None, background: bool = False):
    """Run `grpo train` in its own process group, output to a log file.

    The whole group is killed afterwards, in case a child outlives a SIGKILLed run (the
    embedded Prefect server stops itself, see flows/local_server.py). Pipes are avoided
    since such an orphan would hold them open.
    """
    env = dict(os.environ, PREFECT_HOME=str(run_dir.parent / f"prefect-{run_dir.name}"),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")
    env.pop("PREFECT_API_URL", None)
    env.pop("GRPO_FAULT_INJECT", None)
    if fault:
        env["GRPO_FAULT_INJECT"] = fault
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", str(config), "--run-dir", str(run_dir)]
    log_path = run_dir.parent / f"{run_dir.name}-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(argv, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    if background:
        return proc
    proc.wait(timeout=1500)
    kill_group(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, log_path.read_text(), "")


def kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def params_sha(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["params_sha256"]


def artifact_shas(run_dir: Path, step: int) -> dict[str, str]:
    folder = run_dir / "steps" / f"step-{step:06d}"
    return {p.name: sha256_file(p) for p in sorted(folder.glob("*.*"))} if folder.exists() else {}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baseline")
    config = write_config(tmp)
    done = train(config, tmp / "run")
    assert done.returncode == 0, done.stdout[-3000:]
    return config, params_sha(tmp / "run")


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_in_each_phase_of_a_middle_step_resumes_to_the_same_params(phase, baseline, tmp_path):
    config, expected = baseline
    run_dir = tmp_path / "run"
    killed = train(config, run_dir, fault=f"{phase}:1:kill")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    before = artifact_shas(run_dir, 1)
    assert f"{phase}.parquet" not in before and "update.json" not in before
    assert len(before) == PHASES.index(phase)  # the earlier phases of the killed step are on disk
    resumed = train(config, run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    after = artifact_shas(run_dir, 1)
    assert {name: after[name] for name in before} == before  # reused unchanged, not resampled
    assert params_sha(run_dir) == expected


def test_sigkill_while_a_checkpoint_is_written_in_the_background_resumes_to_the_same_params(baseline, tmp_path):
    config, expected = baseline
    run_dir = tmp_path / "run"
    killed = train(config, run_dir, fault="checkpoint:1:kill")  # step 1's checkpoint written, not committed
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert set(artifact_shas(run_dir, 1)) == {f"{phase}.parquet" for phase in PHASES[:3]} | {"update.json"}
    names = [p.name for p in (run_dir / "checkpoints").iterdir()]
    assert "1" in names and "2" not in names and any(n.startswith("2.") and "tmp" in n for n in names), names
    resumed = train(config, run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    step1 = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1]
    assert "time_rollout" not in step1 and "time_update" in step1  # its update replayed from checkpoint 1
    assert params_sha(run_dir) == expected
    assert sorted(int(n) for n in (p.name for p in (run_dir / "checkpoints").iterdir()) if n.isdigit()) == [2, 3]


def test_external_kill_minus_9_then_resume(baseline, tmp_path):
    config, expected = baseline
    run_dir = tmp_path / "run"
    proc = train(config, run_dir, background=True)
    deadline = time.time() + 600
    while not (run_dir / "steps" / "step-000001" / "reward.parquet").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kill_group(proc)
    resumed = train(config, run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert params_sha(run_dir) == expected


def test_checkpoint_interval_above_one_replays_cached_advantages(tmp_path):
    config = write_config(tmp_path, steps=4, every_steps=2)
    straight = train(config, tmp_path / "straight")
    assert straight.returncode == 0, straight.stdout[-3000:]
    run_dir = tmp_path / "run"
    killed = train(config, run_dir, fault="rollout:3:kill")  # step 2 finished, newest checkpoint is after step 1
    assert killed.returncode == -signal.SIGKILL
    step2 = artifact_shas(run_dir, 2)
    assert set(step2) == {"rollout.parquet", "reward.parquet", "advantage.parquet", "update.json"}
    resumed = train(config, run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    step2_record = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][2]
    assert "time_rollout" not in step2_record and "time_advantage" not in step2_record  # cache hits
    assert "time_update" in step2_record  # replayed through update
    replayed = artifact_shas(run_dir, 2)
    assert {k: replayed[k] for k in ("rollout.parquet", "reward.parquet", "advantage.parquet")} == \
        {k: step2[k] for k in ("rollout.parquet", "reward.parquet", "advantage.parquet")}
    assert params_sha(run_dir) == params_sha(tmp_path / "straight")
