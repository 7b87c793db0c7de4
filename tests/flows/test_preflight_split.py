"""`grpo preflight` and `grpo print-config` on a split slice (mesh.sampler_devices): each
group's phases on its own chips, the batch as `grpo train` divides it, the refusals, and
the best split for rollout.max_staleness=1 configs."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.preflight import estimate_config, run_preflight, with_overrides
from grpo_core.accelerators import get_accelerator
from grpo_core.errors import UserError
from schemas import load_run_config
from tasks.device_groups import derive_trainer_batch

ROOT = Path(__file__).resolve().parents[2]
CFG_3B = str(ROOT / "configs" / "grpo_gsm8k_qwen25_3b_bs128_steps100.yaml")  # 16 prompts x n=8


def grpo(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli.main", *args], capture_output=True, text=True, cwd=ROOT)


def _row(out: str, name: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(name))
    body = line[24:]
    return [body[i:i + 10].strip() for i in range(0, len(body), 10)]


def test_split_estimates_each_group_on_its_own_chips(tmp_path):
    out = grpo("preflight", "--config", CFG_3B, "--tpu", "v6e-8", "--set", "mesh.sampler_devices=4",
               "--json", str(tmp_path / "pf.json"))
    assert out.returncode == 0, out.stderr
    phases = _row(out.stdout, "GiB per device")
    assert phases == ["prefill", "decode", "update", "eval"]
    assert _row(out.stdout, "runs on (chips)") == ["sampler 4", "sampler 4", "trainer 4", "sampler 4"]
    # The update divides the 128 sequences over the trainer's 4 chips, not all 8.
    assert "update 32 sequences" in out.stdout
    doc = json.loads((tmp_path / "pf.json").read_text())
    assert doc["sampler_devices"] == 4
    assert {p: v["devices"] for p, v in doc["phases"].items()} == {
        "rollout": "sampler 4", "update": "trainer 4", "eval": "sampler 4"}

    cfg = load_run_config(CFG_3B, ["mesh.sampler_devices=4"])
    split = run_preflight(cfg, "v6e-8")
    # The trainer group's update is the update of the same config on a 4-chip slice.
    alone = run_preflight(load_run_config(CFG_3B), "v6e-4")
    assert split.estimate.phases["update"] == alone.estimate.phases["update"]
    # The sampler group holds its copy of the params and no training state.
    for phase in ("prefill", "decode", "eval"):
        assert not {"optimizer state", "reference params"} & set(split.estimate.phases[phase])
    assert split.estimate.total("decode") < alone.estimate.total("decode")
    assert dict(split.sampler.mesh) == {"dp": 1, "fsdp": 4, "tp": 1}


def test_print_config_derives_the_batch_over_the_trainers_devices():
    out = grpo("print-config", "--config", CFG_3B, "--devices", "8", "--processes", "1",
               "--set", "mesh.sampler_devices=4")
    assert out.returncode == 0, out.stderr
    derived = yaml.safe_load(out.stdout)["derived"]
    cfg = load_run_config(CFG_3B, ["mesh.sampler_devices=4"])
    expected = derive_trainer_batch(cfg, 1, 8)  # what tasks.run_dir.RunPlan (grpo train) derives
    assert derived["num_devices"] == expected.num_devices == 4
    assert derived["sequences_per_device"] == expected.sequences_per_device == 32
    assert (derived["micro_batch_size"], derived["grad_accum_steps"]) == (
        expected.micro_batch_size, expected.grad_accum_steps)
    whole = yaml.safe_load(grpo("print-config", "--config", CFG_3B, "--devices", "8", "--processes", "1").stdout)
    assert whole["derived"]["sequences_per_device"] == 16


def test_trainsession_batch_is_the_same_function(tmp_path):
    from tasks.run_dir import RunPlan

    cfg = load_run_config(str(ROOT / "configs" / "quickstart_cpu.yaml"), ["mesh.sampler_devices=4"])
    assert RunPlan(cfg, tmp_path).derived == derive_trainer_batch(cfg, 1, 8)  # 8 host devices (tests/conftest.py)
    assert RunPlan(cfg, tmp_path).derived.num_devices == 4


def test_a_split_leaving_no_trainer_is_one_sentence_exit_2():
    sentence = "mesh.sampler_devices=8 leaves none of the 8 devices to train; use 1 to 7, or 0 for no split"
    for extra in ((), ("--compile",)):
        out = grpo("preflight", "--config", CFG_3B, "--tpu", "v6e-8", "--set", "mesh.sampler_devices=8", *extra)
        assert out.returncode == 2 and sentence in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1 and out.stdout == ""
    out = grpo("print-config", "--config", CFG_3B, "--devices", "8", "--set", "mesh.sampler_devices=9")
    assert out.returncode == 2 and "mesh.sampler_devices=9 leaves none of the 8 devices" in out.stderr
    out = grpo("preflight", "--config", CFG_3B, "--tpu", "v6e-16", "--set", "mesh.sampler_devices=6")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "mesh.sampler_devices=6 is not a multiple of the 4 processes" in out.stderr, out.stderr
    out = grpo("preflight", "--config", CFG_3B, "--tpu", "v6e-16", "--set", "mesh.sampler_devices=4")
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    assert "mesh.sampler_devices=4: no slab of the slice's chip grid holds 1 chips of every host" in out.stderr


def test_best_split_is_named_by_memory_for_staleness_1():
    out = grpo("preflight", "--config", CFG_3B, "--tpu", "v6e-8", "--set", "rollout.max_staleness=1")
    assert out.returncode == 0, out.stderr
    line = out.stdout.splitlines()[-1]
    assert line.startswith("best split on v6e-8: mesh.sampler_devices=") and "chosen by memory, not by time" in line
    chosen = int(line.split("mesh.sampler_devices=")[1].split()[0])
    # Recomputed: of the splits whose groups both fit, the chosen one keeps the most headroom.
    cfg, acc = load_run_config(CFG_3B, ["rollout.max_staleness=1"]), get_accelerator("v6e-8")
    headroom = {}
    for n in range(2, 8, 2):  # whole rows of v6e-8's 2x4 chip grid
        try:
            headroom[n] = acc.capacity_bytes - estimate_config(with_overrides(cfg, [f"mesh.sampler_devices={n}"]),
                                                               acc)[2].peak_bytes
        except UserError:  # the batch does not divide over 8 - n trainer chips
            continue
    assert chosen in headroom and headroom[chosen] >= 0
    assert headroom[chosen] == max(h for h in headroom.values() if h >= 0)
    assert sorted(headroom) == [4, 6]  # 128 sequences divide over 4 and 2 trainer chips, not 6

    assert "best split" not in grpo("preflight", "--config", CFG_3B, "--tpu", "v6e-8").stdout
    multi = grpo("preflight", "--config", CFG_3B, "--tpu", "v6e-16", "--set", "rollout.max_staleness=1")
    line = multi.stdout.splitlines()[-1]
    assert multi.returncode == 0 and line.startswith("best split on v6e-16: mesh.sampler_devices=8 "), multi.stdout
    assert "(sampler 8 chips, 2 of each host's 4, trainer 8)" in line  # the only share v6e-16's grid allows


def test_compile_check_builds_each_groups_mesh_on_its_own_part_of_the_slice():
    # What `grpo preflight --compile` lowers each program on, over 8 host devices standing in
    # for v6e-8's topology (compiling needs libtpu).
    import jax

    from flows.compile_check import group_meshes
    from flows.preflight import resolve_model_config

    devices, acc = jax.devices(), get_accelerator("v6e-8")
    cfg = load_run_config(CFG_3B, ["mesh.sampler_devices=4"])
    mesh, gen = group_meshes(cfg, acc, devices, resolve_model_config(cfg.model.name_or_path))
    assert list(mesh.devices.flat) == devices[4:] and dict(mesh.shape) == {"dp": 1, "fsdp": 4, "tp": 1}
    assert set(gen.devices.flat) == set(devices[:4])
    assert dict(gen.shape) == dict(run_preflight(cfg, "v6e-8").sampler.generation_mesh)
    whole, _ = group_meshes(load_run_config(CFG_3B), acc, devices, resolve_model_config(cfg.model.name_or_path))
    assert whole.devices.size == 8


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed (pip install -e '.[tpu]')")
def test_compile_check_compiles_each_group_for_its_own_chips_of_v6e_8():
    from flows import compile_check
    from flows.preflight import resolve_model_config
    from train_helpers import tiny_config

    acc, tiny = get_accelerator("v6e-8"), ["rollout.batch_size=8", "rollout.n=2", "model.dtype=bfloat16"]
    cfg = tiny_config(*tiny, "mesh.sampler_devices=4")
    compiled = compile_check.compile_config(cfg, acc, ("rollout", "update"))
    assert all(r.error is None and r.xla_bytes > 0 for r in compiled.values()), compiled
    devices = compile_check.slice_devices(acc)
    mesh, gen = compile_check.group_meshes(cfg, acc, devices, resolve_model_config(cfg.model.name_or_path))
    assert {d.id for d in mesh.devices.flat} == {d.id for d in devices[4:]}
    assert {d.id for d in gen.devices.flat} == {d.id for d in devices[:4]}
    # Three chips of the 2x4 grid are no block: one sentence, as the best split never names one.
    with pytest.raises(UserError, match="do not both form a block"):
        compile_check.compile_config(tiny_config(*tiny, "mesh.sampler_devices=3", "rollout.allow_padding=true"),
                                     acc, ("rollout",))
    # The run's own meshes (tasks/session.py) come from the same function: no assertion's traceback at run time.
    from tasks.device_groups import split_meshes
    with pytest.raises(UserError, match="mesh.sampler_devices=3: .*do not both form a block"):
        split_meshes(devices[:3], devices[3:], {"fsdp": 5}, {"fsdp": 3})
    trainer_mesh, sampler_mesh = split_meshes(devices[:4], devices[4:], {"fsdp": 4}, {"fsdp": 4})
    assert {d.id for d in sampler_mesh.devices.flat} == {d.id for d in devices[:4]}


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed (pip install -e '.[tpu]')")
def test_a_split_of_v6e_16_gives_each_host_half_its_chips_in_two_torus_slabs_and_compiles():
    # v6e-16: 4 hosts of 2x2 chips on a 4x4 grid. Each host gives 2 chips to sampling; the
    # samplers are columns 1-2 and the trainers columns 3 and 0 (a slab across the torus's
    # wrap-around).
    from flows import compile_check
    from flows.preflight import resolve_model_config
    from tasks.device_groups import grid_chips
    from train_helpers import tiny_config

    acc = get_accelerator("v6e-16")
    devices = compile_check.slice_devices(acc)
    assert [(tuple(d.coords), d.process_index) for d in devices] == [
        (c.coords, c.process_index) for c in grid_chips((4, 4), acc.host_bounds)]  # what preflight decides on
    cfg = tiny_config("rollout.batch_size=16", "rollout.n=2", "model.dtype=bfloat16", "mesh.sampler_devices=8",
                      "rollout.max_staleness=1", "rollout.weights_layout=fsdp")
    mesh, gen = compile_check.group_meshes(cfg, acc, devices, resolve_model_config(cfg.model.name_or_path))
    assert {d.coords[0] for d in gen.devices.flat} == {1, 2} and {d.coords[0] for d in mesh.devices.flat} == {0, 3}
    rows = mesh.devices.reshape(mesh.shape["dp"], -1)  # mesh.shape auto: dp across hosts, fsdp inside each
    assert [len({d.process_index for d in row}) for row in rows] == [1] * 4
    assert dict(gen.shape) == {"dp": 1, "fsdp": 8, "tp": 1}  # the samplers: fsdp over all 8, across hosts
    for group in (mesh, gen):
        assert sorted(d.process_index for d in group.devices.flat) == [0, 0, 1, 1, 2, 2, 3, 3]
    compiled = compile_check.compile_config(cfg, acc, ("rollout", "update"))
    assert all(r.error is None and r.xla_bytes > 0 for r in compiled.values()), compiled
