"""Several JAX processes on one machine (slow tier): 2 processes x 2 CPU devices against
1 process x 4 devices with the same global config (full fine-tuning and LoRA); kill -9 of
one process and restart of both; and the fail-fast check when only some of the required
processes start.

Tolerances: per-step rewards must be equal (the same global prompts are sampled with the
same key; every reward is computed from the sampled text), loss within 1e-4 absolute.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from train_helpers import TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path, steps: int = 2) -> Path:
    body = json.loads(json.dumps(TINY))
    body["train"]["steps"] = steps
    path = tmp_path / "cfg.yaml"
    path.write_text("# multi-host test config\n" + yaml.safe_dump(body))
    return path


def launch(config: Path, run_dir: Path, devices: int, process_id: int | None = None, processes: int = 1,
           port: int | None = None, extra: tuple = ()) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PREFECT_HOME=str(run_dir.parent / f"prefect-{run_dir.name}-{process_id or 0}"),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")
    env.pop("PREFECT_API_URL", None)
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", str(config), "--run-dir", str(run_dir)]
    if processes > 1:
        argv += ["--set", f"mesh.num_processes={processes}", "--set", f"mesh.coordinator_address=127.0.0.1:{port}",
                 "--set", f"mesh.process_id={process_id}"]
    argv += list(extra)
    log = open(run_dir.parent / f"{run_dir.name}-p{process_id or 0}.log", "w")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run_two(config: Path, run_dir: Path) -> list[subprocess.Popen]:
    port = free_port()
    return [launch(config, run_dir, 2, i, 2, port) for i in range(2)]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def wait_all(procs, timeout=1500) -> list[int]:
    codes = [p.wait(timeout=timeout) for p in procs]
    for proc in procs:  # a killed process leaves its embedded Prefect server behind
        kill_group(proc)
    return codes


def kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    config = write_config(tmp)
    assert launch(config, tmp / "run", devices=4).wait(timeout=1500) == 0
    return config, metrics(tmp / "run")


def test_two_processes_match_one_process_with_the_same_global_config(single, tmp_path):
    config, expected = single
    run_dir = tmp_path / "run"
    assert wait_all(run_two(config, run_dir)) == [0, 0], (tmp_path / "run-p0.log").read_text()[-3000:]
    got = metrics(run_dir)
    assert [m["step"] for m in got] == [0, 1]
    assert_same_training(got, expected)
    assert any(abs(m["loss"]) > 0 for m in got), "the tiny run must actually train"
    for step in range(2):
        folder = run_dir / "steps" / f"step-{step:06d}"
        for phase, suffix in (("rollout", "parquet"), ("reward", "parquet"), ("advantage", "parquet"), ("update", "json")):
            shards = sorted(p.name for p in folder.glob(f"{phase}*.{suffix}"))
            assert shards == [f"{phase}.p0of2.{suffix}", f"{phase}.p1of2.{suffix}"]


def kill_one_when(procs, path: Path) -> None:
    """SIGKILL process 1 once `path` exists; the survivor, waiting for its dead peer (in a
    collective or the key-value store), is killed too if it has not exited within 20 s."""
    deadline = time.time() + 1200
    while not path.exists():
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    try:
        procs[0].wait(timeout=20)
    except subprocess.TimeoutExpired:
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
    wait_all(procs)


def assert_same_training(got: list[dict], expected: list[dict]) -> None:
    """Per-step rewards equal (the same prompts and keys), losses within 1e-4."""
    assert [m["step"] for m in got] == [m["step"] for m in expected]
    for ours, ref in zip(got, expected):
        assert ours["reward_mean"] == pytest.approx(ref["reward_mean"], abs=1e-6)
        assert ours["loss"] == pytest.approx(ref["loss"], abs=1e-4)


def test_kill_9_of_one_process_then_restart_of_both_finishes(single, tmp_path):
    config = write_config(tmp_path, steps=3)
    straight_dir = tmp_path / "straight"
    assert wait_all(run_two(config, straight_dir)) == [0, 0]
    run_dir = tmp_path / "run"
    kill_one_when(run_two(config, run_dir), run_dir / "steps" / "step-000001" / "reward.p1of2.parquet")
    assert wait_all(run_two(config, run_dir)) == [0, 0], (tmp_path / "run-p0.log").read_text()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params_sha256"] == json.loads((straight_dir / "summary.json").read_text())["params_sha256"]


def test_required_process_count_fails_fast_when_only_one_starts(tmp_path):
    config = write_config(tmp_path)
    started = time.time()
    proc = launch(config, tmp_path / "run", 2, 0, 2, free_port(), extra=("--set", "mesh.init_timeout_s=10"))
    assert wait_all([proc], timeout=120) == [2]
    elapsed = time.time() - started
    log = (tmp_path / "run-p0.log").read_text()
    assert "not all of the 2 JAX processes joined within 10 s" in log
    assert "Traceback" not in log
    assert elapsed < 60


def test_lora_on_two_processes_matches_one_process(tmp_path):
    """LoRA adapters train the same on 2 processes x 2 devices as on 1 process x 4 devices."""
    config, lora = write_config(tmp_path), ("--set", "model.lora.rank=4", "--set", "model.lora.alpha=8")
    assert launch(config, tmp_path / "one", devices=4, extra=lora).wait(timeout=1500) == 0
    port = free_port()
    procs = [launch(config, tmp_path / "two", 2, i, 2, port, lora) for i in range(2)]
    assert wait_all(procs) == [0, 0], (tmp_path / "two-p0.log").read_text()[-3000:]
    expected, got = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [m["step"] for m in got] == [0, 1]
    assert_same_training(got, expected)
    assert any(abs(m["loss"]) > 0 for m in got), "the adapters must actually train"


def split_config(tmp_path: Path) -> Path:
    from train_helpers import write_tiny_config

    return write_tiny_config(tmp_path / "split.yaml", "multi-host split test config",
                             train={"steps": 3, "ppo_epochs": 2},
                             rollout={"max_staleness": 1, "batch_size": 8, "n": 4, "max_new_tokens": 128},
                             mesh={"sampler_devices": 2})


def test_a_split_over_two_processes_overlaps_matches_one_process_and_resumes(tmp_path):
    """mesh.sampler_devices=2 on 2 processes x 2 devices: each process gives one device to
    sampling and one to training (as many devices as this 2-core machine runs at once). The
    rollout of step k+1 runs beside the update of step k; the run samples what one process
    with the same split samples, with the trainer's fsdp inside each host or across both;
    kill -9 of one process, restart of both: the same params."""
    from test_device_split import overlapping_steps

    config = split_config(tmp_path)
    assert launch(config, tmp_path / "one", devices=4).wait(timeout=1500) == 0
    assert wait_all(run_two(config, tmp_path / "two")) == [0, 0], (tmp_path / "two-p0.log").read_text()[-3000:]
    expected, got = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [m["rollout_params_version"] for m in got] == [0, 0, 1]
    assert all(m["weights_reshard_seconds"] > 0 for m in got)  # each host copied its params across
    assert_same_training(got, expected)
    assert overlapping_steps(got), [{k: v for k, v in m.items() if "busy" in k} for m in got]
    # A trainer mesh whose fsdp spans both hosts: the params are gathered into one replica per
    # host on the trainer group before each host copies its own to its sampler device.
    port, across = free_port(), ("--set", "mesh.shape={dp: 1, fsdp: 2, tp: 1}")
    procs = [launch(config, tmp_path / "across", 2, i, 2, port, across) for i in range(2)]
    assert wait_all(procs) == [0, 0], (tmp_path / "across-p0.log").read_text()[-3000:]
    assert_same_training(metrics(tmp_path / "across"), expected)

    run_dir = tmp_path / "killed"
    kill_one_when(run_two(config, run_dir), run_dir / "steps" / "step-000001" / "advantage.p1of2.parquet")
    assert wait_all(run_two(config, run_dir)) == [0, 0], (tmp_path / "killed-p0.log").read_text()[-3000:]
    sha = json.loads((run_dir / "summary.json").read_text())["params_sha256"]
    assert sha == json.loads((tmp_path / "two" / "summary.json").read_text())["params_sha256"]
