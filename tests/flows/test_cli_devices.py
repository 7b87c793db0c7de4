"""`grpo train` with the real SmolLM2 on several host devices in one process, run the way a
user runs it (the command, as a subprocess), as every TPU VM runs it: a v6e-8 is 8 chips in
one JAX process. The warm start and asynchronous checkpoints are on, as by default.

A program whose collectives enter the devices in different orders aborts XLA:CPU in its
rendezvous after 40 s (a TPU hangs instead); these runs are the ones that caught it
(tasks/dispatch.py, grpo_core.compiles.persistent_cache_safe). The 2-device run is in the
fast tier; the other generation layouts and a kill -9 resume are in the slow tier, and the
smoke deployment's end-to-end test (tests/flows/test_smoke_e2e.py) trains configs/smoke_v6e8.yaml
as shipped on 8 host devices.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpo_core.models.hub import is_pulled
from tasks.models import default_models_dir

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["rollout.batch_size=4", "rollout.n=2", "rollout.max_new_tokens=12", "logging.progress_bar=false"]


@pytest.fixture(scope="module", autouse=True)
def smollm2_pulled():
    if not is_pulled(default_models_dir() / "smollm2-135m-instruct"):
        pytest.skip("SmolLM2 is not pulled here: run `grpo models pull smollm2-135m-instruct` (.ci/run does)")


def grpo_train(run_dir: Path, devices: int, config: str, *sets: str, timeout: int = 900, fault: str | None = None):
    """`grpo train` on `devices` host devices, in its own process group, output to a log file
    (no pipes: a child that outlives a SIGKILLed run would hold them open)."""
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", config, "--run-dir", str(run_dir)]
    for item in sets:
        argv += ["--set", item]
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.pop("GRPO_FAULT_INJECT", None)
    if fault:
        env["GRPO_FAULT_INJECT"] = fault  # tasks/faults.py
    log = run_dir.parent / f"{run_dir.name}-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, proc.returncode, log.read_text(), "")


def assert_trained(result, run_dir: Path, steps: int) -> dict:
    output = result.stdout + result.stderr
    assert "rendezvous" not in output.lower(), output[-3000:]
    assert result.returncode == 0, output[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == steps
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(m["step"] for m in metrics if "step" in m and "loss" in m) == list(range(steps))
    return summary


def compiled_in_steps(summary: dict, program: str) -> int:
    """Compiles of `program` in the step phases (not in the warm start's "setup")."""
    return sum(row["programs"].get(program, 0) for phase, row in summary["compiles"].items() if phase != "setup")


def test_smollm2_trains_on_two_devices_with_warm_start_and_async_checkpoints(tmp_path):
    run_dir = tmp_path / "two"
    result = grpo_train(run_dir, 2, "configs/quickstart_cpu.yaml", "train.steps=2", "checkpoint.every_steps=1", *SMALL)
    summary = assert_trained(result, run_dir, 2)
    # The warm start compiled step 0's sampler and update; the steps ran those programs.
    assert summary["compiles"]["setup"]["programs"].get("jit(train_step)") == 1
    assert compiled_in_steps(summary, "jit(train_step)") == 0
    # Nothing loaded from a persistent compilation cache: on a CPU mesh of several devices a
    # loaded program may enter its collectives in another order per device (docs/dispatch.md).
    assert sum(row["from_cache"] for row in summary["compiles"].values()) == 0
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2]
    # Resuming a finished run on the same devices loads nothing and runs nothing.
    again = grpo_train(run_dir, 2, "configs/quickstart_cpu.yaml", "train.steps=2", "checkpoint.every_steps=1", *SMALL)
    assert again.returncode == 0 and "nothing to do" in again.stdout + again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("layout,devices", [("replicated", 2), ("tp", 3)])
def test_smollm2_trains_with_each_generation_layout(tmp_path, layout, devices):
    """The other generation layouts; "fsdp" is what `auto` gives on CPU, so the 2-device run
    above and the kill -9 run below sample with it. tp needs a device count that divides
    SmolLM2's 9 query and 3 KV heads: 3 devices."""
    run_dir = tmp_path / layout
    sets = ["train.steps=3", "checkpoint.every_steps=1", f"rollout.weights_layout={layout}", *SMALL]
    if devices == 3:
        sets += ["rollout.batch_size=3", "train.micro_batch_size=2"]
    result = grpo_train(run_dir, devices, "configs/quickstart_cpu.yaml", *sets)
    assert_trained(result, run_dir, 3)
    rollout = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert rollout["generation_weights_gib"] > 0.0  # sampled from its own copy of the weights


@pytest.mark.slow
def test_smollm2_on_two_devices_resumes_after_kill_minus_9_to_the_same_params(tmp_path):
    """A resumed run compiles its programs again in a new process (no persistent cache on a
    CPU mesh of several devices): killed in step 1's update, it ends where an uninterrupted
    run ends."""
    sets = ["train.steps=3", "checkpoint.every_steps=1", *SMALL]
    whole = assert_trained(grpo_train(tmp_path / "whole", 2, "configs/quickstart_cpu.yaml", *sets), tmp_path / "whole", 3)
    killed = grpo_train(tmp_path / "killed", 2, "configs/quickstart_cpu.yaml", *sets, fault="update:1:kill")
    assert killed.returncode == -9
    resumed = assert_trained(grpo_train(tmp_path / "killed", 2, "configs/quickstart_cpu.yaml", *sets),
                             tmp_path / "killed", 3)
    assert resumed["params_sha256"] == whole["params_sha256"]
