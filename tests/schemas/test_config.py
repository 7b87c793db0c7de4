"""RunConfig: defaults, overrides, errors, derived batch numbers, shipped configs."""
from pathlib import Path

import pytest
import typing

from grpo_core.errors import UserError
from grpo_core.optim import OPTIMIZERS, SCHEDULES
from schemas import build_run_config, load_run_config
from schemas.train import OptimizerSection, LrScheduleSection

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_dir_is_not_empty():
    names = {p.name for p in CONFIGS}
    assert {"smoke_v6e8.yaml", "grpo_gsm8k_qwen25_3b_bs128_steps100.yaml",
            "grpo_gsm8k_qwen25_7b_bs128_steps100.yaml", "quickstart_cpu.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_run_config(path)
    shape = cfg.mesh.shape  # a config may name its slice's mesh (the 8B v6e-16 one: fsdp=16)
    devices = 1 if shape == "auto" else shape.dp * shape.fsdp * shape.tp
    assert cfg.derive(1, devices).sequences_global_per_step == cfg.rollout.batch_size * cfg.rollout.n
    assert path.read_text().startswith("#"), "each config starts with a comment header"


def test_bs128_means_128_sequences():
    cfg = load_run_config(Path(CONFIGS[0]).parent / "grpo_gsm8k_qwen25_3b_bs128_steps100.yaml")
    derived = cfg.derive(num_processes=1, num_devices=8)
    assert (cfg.rollout.batch_size, cfg.rollout.n) == (16, 8)
    assert derived.sequences_global_per_step == 128
    assert derived.sequences_per_device == 16
    assert derived.grad_accum_steps == 16 // cfg.train.micro_batch_size


def test_overrides_are_typed_by_the_schema():
    cfg = build_run_config({}, ["rollout.n=16", "rollout.temperature=0.7", "train.optimizer.clip_norm=0",
                                "advantage.clip=null", "model.remat=true", "train.optimizer.lr_schedule.peak_value=1e-5",
                                'rewards=[{name: gsm8k_correct, weight: 2}]'])
    assert cfg.rollout.n == 16 and cfg.rollout.temperature == 0.7
    assert cfg.train.optimizer.clip_norm == 0.0 and cfg.advantage.clip is None and cfg.model.remat is True
    assert cfg.train.optimizer.lr_schedule.peak_value == 1e-5
    assert [(r.name, r.weight) for r in cfg.rewards] == [("gsm8k_correct", 2.0)]


@pytest.mark.parametrize(
    "override, needles",
    [
        ("train.optimizer.name=adamz", ["train.optimizer.name", "adamz", "lion", "adamw", "sgd"]),
        ("train.optimzer.name=adamw", ["unknown config key", "train.optimzer"]),
        ("rollout.n=0", ["rollout.n", "greater than or equal to 1"]),
        ("rollout.top_p=1.5", ["rollout.top_p"]),
        ("advantage.estimator=ppo", ["advantage.estimator", "grpo"]),
        ("rollout.n.x=3", ["rollout.n=", "valid integer"]),
        ("rollout", ["dotted.key=value"]),
    ],
)
def test_bad_values_name_the_field(override, needles):
    with pytest.raises(UserError) as info:
        build_run_config({}, [override])
    assert info.value.exit_code == 2
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["eval.every_steps=1", "eval.num_prompts=32", "data.num_eval=4"],
         ["eval.num_prompts (32) exceeds data.num_eval (4)"]),
        (["rewards=[{name: gsm8k_correct}, {name: gsm8k_correct}]"], ["rewards lists a function twice"]),
    ],
)
def test_model_level_errors_are_one_sentence_without_the_config(overrides, needles):
    with pytest.raises(UserError) as info:
        build_run_config({}, overrides)
    message = str(info.value)
    for needle in needles:
        assert needle in message
    assert "{" not in message and "Value error" not in message and "\n" not in message


def test_batch_that_does_not_split_names_fields_and_nearest_values():
    cfg = build_run_config({}, ["rollout.batch_size=3", "rollout.n=4"])
    with pytest.raises(UserError) as info:
        cfg.derive(num_processes=2, num_devices=8)
    message = str(info.value)
    assert "rollout.batch_size=3" in message and "rollout.n=4" in message
    assert "rollout.batch_size=2 or 4" in message


def test_allow_padding_pads_up_and_reports_it():
    cfg = build_run_config({}, ["rollout.batch_size=3", "rollout.n=4", "rollout.allow_padding=true"])
    derived = cfg.derive(num_processes=2, num_devices=8)
    assert derived.prompts_global_per_step == 4 and derived.padded_prompts == 1
    assert derived.prompts_per_process == 2 and derived.sequences_per_device == 2


def test_micro_batch_must_divide_per_device_sequences():
    cfg = build_run_config({}, ["rollout.batch_size=4", "rollout.n=4", "train.micro_batch_size=3"])
    with pytest.raises(UserError, match=r"train.micro_batch_size=3 .* \[1, 2, 4, 8, 16\]"):
        cfg.derive(1, 1)


def test_micro_batch_size_is_an_upper_bound_per_device():
    # the quickstart's 8 sequences per micro-batch on one CPU device, and on a v6e-8 (2 per device)
    cfg = build_run_config({}, ["rollout.batch_size=4", "rollout.n=4", "train.micro_batch_size=8"])
    assert (cfg.derive(1, 1).micro_batch_size, cfg.derive(1, 1).grad_accum_steps) == (8, 2)
    assert (cfg.derive(1, 8).micro_batch_size, cfg.derive(1, 8).grad_accum_steps) == (2, 1)


def test_explicit_mesh_shape_must_match_devices():
    cfg = build_run_config({}, ["mesh.shape={dp: 2, fsdp: 2, tp: 2}"])
    assert cfg.derive(1, 8).batch_shards == 4
    with pytest.raises(UserError, match="mesh.shape"):
        cfg.derive(1, 4)


def test_derived_is_read_only():
    derived = build_run_config({}).derive(1, 1)
    with pytest.raises(Exception):
        derived.micro_batch_size = 3


def test_warmup_steps_derived_from_ratio():
    assert build_run_config({}, ["train.steps=300"]).derive().warmup_steps == 15
    assert build_run_config({}, ["train.optimizer.lr_schedule.warmup_steps=7"]).derive().warmup_steps == 7


def test_every_field_is_described():
    from schemas.run import RunConfig
    from pydantic import BaseModel

    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for arg in typing.get_args(field.annotation) + (field.annotation,):
                inner = typing.get_args(arg) or (arg,)
                for sub in inner:
                    if isinstance(sub, type) and issubclass(sub, BaseModel) and sub is not model:
                        walk(sub)

    walk(RunConfig)


def test_optimizer_and_schedule_names_come_from_the_registries():
    opt_names = typing.get_args(OptimizerSection.model_fields["name"].annotation)
    sched_names = typing.get_args(LrScheduleSection.model_fields["type"].annotation)
    assert set(opt_names) == set(OPTIMIZERS) and set(sched_names) == set(SCHEDULES)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_run_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_run_config(bad)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00model")
    with pytest.raises(UserError, match="binary.yaml is not UTF-8 text"):
        load_run_config(binary)
