"""TrainSession without Prefect: non-finite loss handling, data positions, fault switch."""
import jax
import numpy as np
import pytest

from tasks.faults import parse_fault
from tasks.session import NonFiniteLoss, TrainSession
from train_helpers import tiny_config


@pytest.fixture
def session(tmp_path):
    opened = TrainSession.open(tiny_config("train.steps=3"), tmp_path / "run")
    yield opened
    opened.close()


def test_non_finite_loss_stops_and_keeps_the_last_good_state(session, monkeypatch):
    before = jax.tree.map(np.asarray, session.params)
    monkeypatch.setattr(session.trainer, "step",
                        lambda params, opt, batch, ref=None: (params, opt, {"loss": np.float32(np.nan)}))
    table = session.rollout(0)
    from grpo_core import phases

    rewards, _ = phases.reward_table(table, session.cfg.rewards)
    adv, _ = phases.advantage_table(rewards, 2, "grpo", 1e-4, 1, None)
    with pytest.raises(NonFiniteLoss, match="not finite.*kept the last good checkpoint") as info:
        session.update(0, table, adv)
    assert info.value.exit_code == 1
    assert session.params_version == 0
    assert session.checkpoints.latest() is None
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(session.params)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_prompts_of_a_step_are_a_pure_function_of_the_step(session):
    first = [it["prompt_id"] for it in session.items_for_step(5)]
    session.items_for_step(0)
    assert [it["prompt_id"] for it in session.items_for_step(5)] == first
    assert len(first) == session.cfg.rollout.batch_size


def test_fault_switch_parsing():
    assert parse_fault(None) is None
    assert parse_fault("update:2:kill") == ("update", 2, "kill")
    with pytest.raises(SystemExit, match="GRPO_FAULT_INJECT"):
        parse_fault("update:two:kill")


def test_cache_folder_and_checkpoint_mode_may_change_on_resume_without_new_cache_keys(tmp_path):
    from types import SimpleNamespace

    from flows.train import _phase_inputs
    from grpo_core.errors import UserError
    from schemas.loading import config_to_yaml
    from tasks.run_dir import check_same_run

    first = tiny_config()
    (tmp_path / "config.yaml").write_text(config_to_yaml(first))
    moved = tiny_config("train.compilation_cache_dir=gs://bucket/xla", "checkpoint.asynchronous=false")
    check_same_run(tmp_path, moved)
    assert _phase_inputs(SimpleNamespace(cfg=moved)) == _phase_inputs(SimpleNamespace(cfg=first))
    with pytest.raises(UserError, match="sections train differ"):
        check_same_run(tmp_path, tiny_config("train.seed=1"))


def test_rollout_on_a_generation_layout_samples_what_the_training_layout_does(tmp_path):
    """tiny-llama (6 and 2 heads) on 8 CPU devices: replicated and tp (=2) reshard the
    params once per rollout, report it, and sample the same completions as fsdp."""
    tables = {}
    for layout in ("fsdp", "replicated", "tp"):
        session = TrainSession.open(tiny_config(f"rollout.weights_layout={layout}"), tmp_path / layout)
        try:
            assert session.weights_layout == layout
            assert dict(session.generation_mesh.shape) == {"fsdp": {"dp": 1, "fsdp": 8, "tp": 1},
                                                          "replicated": {"dp": 8, "fsdp": 1, "tp": 1},
                                                          "tp": {"dp": 4, "fsdp": 1, "tp": 2}}[layout]
            tables[layout] = session.rollout(0).column("completion_ids").to_pylist()
            copied = session.reshard_stats["generation_weights_gib"]
            assert (copied > 0) == (layout != "fsdp") and session.reshard_stats["weights_reshard_seconds"] >= 0
        finally:
            session.close()
    assert tables["replicated"] == tables["fsdp"] == tables["tp"]


def test_auto_layout_keeps_the_training_layout_on_cpu(session):
    # CPU devices report no memory limit: auto cannot know what fits, so nothing is copied.
    assert session.cfg.rollout.weights_layout == "auto" and session.weights_layout == "fsdp"
    assert session.generation_mesh is session.mesh
