"""The four-phase step flow on a tiny random model, through one Prefect test harness."""
import asyncio
import json
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from grpo_core.errors import UserError
from grpo_core.sampling import prompt_slots
from tasks.run_dir import RunLock
from train_helpers import read_wandb_history, tiny_config

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROLLOUT_COLUMNS = {"step", "prompt_id", "group_id", "sample_id", "question", "ground_truth", "prompt_ids",
                   "completion_ids", "completion_text", "old_logps", "finish_reason", "prompt_length",
                   "completion_length"}
METRIC_KEYS = {"reward_mean", "reward_std", "reward_gsm8k_correct_mean", "pass@1", "pass@k", "mean@k",
               "zero_std_group_fraction", "advantage_mean", "loss", "clip_frac_low", "clip_frac_high",
               "entropy", "grad_norm", "lr", "completion_length_mean", "completion_length_max",
               "truncation_rate", "rollout_tokens_per_s", "update_tokens_per_s", "time_rollout", "time_update",
               "orchestration_overhead_s", "step_seconds"}


def run(cfg, run_dir):
    from flows.train import train_flow

    return asyncio.run(train_flow(config=cfg, run_dir=str(run_dir)))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = tiny_config("eval.every_steps=2", "eval.num_prompts=2")
    # Start from a cold process, as `grpo train` does: an earlier test of this pytest process
    # may have compiled the same tiny programs, and the compile counts below are a new run's.
    jax.clear_caches()
    return cfg, run_dir, run(cfg, run_dir)


def test_phase_artifacts_are_plain_parquet(finished_run):
    cfg, run_dir, _ = finished_run
    for step in range(2):
        folder = run_dir / "steps" / f"step-{step:06d}"
        rollout = pq.read_table(folder / "rollout.parquet").to_pandas()
        assert ROLLOUT_COLUMNS <= set(rollout.columns) and len(rollout) == 8
        assert list(rollout["group_id"]) == [0, 0, 1, 1, 2, 2, 3, 3] and list(rollout["sample_id"]) == [0, 1] * 4
        for ids, logps, length in zip(rollout["completion_ids"], rollout["old_logps"], rollout["completion_length"]):
            assert len(ids) == len(logps) == length <= 6 and np.all(np.asarray(logps) <= 0)
        rewards = pq.read_table(folder / "reward.parquet").to_pandas()
        assert {"reward_gsm8k_correct", "reward_states_number", "reward_total"} <= set(rewards)
        advantages = pq.read_table(folder / "advantage.parquet").to_pandas()
        np.testing.assert_array_equal(advantages["prompt_id"], rollout["prompt_id"])
        assert json.loads((folder / "update.json").read_text())["grad_norm"] >= 0
    assert (run_dir / "steps" / "step-000001" / "eval.json").exists()


def test_metrics_summary_and_curve(finished_run):
    _, run_dir, summary = finished_run
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [0, 1]
    missing = METRIC_KEYS - set(lines[0])
    assert not missing, missing
    assert "eval_accuracy" in lines[1]
    stored = json.loads((run_dir / "summary.json").read_text())
    assert stored["params_sha256"] == summary["params_sha256"] and len(summary["params_sha256"]) == 64
    assert (run_dir / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_times_compile_counts_and_padding_are_reported(finished_run):
    _, run_dir, summary = finished_run
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:  # every step saved (checkpoint.every_steps=1); each write's own time is known by the end
        assert 0 <= line["checkpoint_wait_previous_s"] <= line["time_checkpoint"] <= line["step_seconds"]
        assert line["checkpoint_write_s"] > 0
        rollout = pq.read_table(run_dir / "steps" / f"step-{line['step']:06d}" / "rollout.parquet")
        prompts, completions = (np.asarray(rollout.column(c)) for c in ("prompt_length", "completion_length"))
        width = prompt_slots(int(prompts.max()))
        assert line["pad_prompt_ratio"] == pytest.approx(width * len(prompts) / prompts.sum() - 1)
        real = prompts.sum() + completions.sum()
        assert line["pad_update_ratio"] == pytest.approx((width + 6) * len(prompts) / real - 1)
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2]
    assert summary["checkpoints"]["saves"] == 2 and summary["checkpoints"]["write_s_mean"] > 0
    # Step 0 compiles the sampler and the train step; step 1 has the same shapes and compiles
    # neither (its eval compiles the greedy sampler).
    assert lines[0]["compiles_rollout"] >= 1 and lines[0]["compiles_update"] >= 1 and lines[0]["compile_s_update"] > 0
    assert "compiles_rollout" not in lines[1] and "compiles_update" not in lines[1] and lines[1]["compiles_eval"] >= 1
    assert summary["compiles"]["update"]["programs"]["jit(train_step)"] == 1
    assert summary["compiles"]["rollout"]["programs"]["jit(_generate_impl)"] == 1
    assert summary["compiles"]["eval"]["programs"]["jit(_generate_impl)"] == 1
    assert summary["time_to_first_step_s"] > 0
    assert summary["pad_update_ratio_mean"] == pytest.approx(np.mean([l["pad_update_ratio"] for l in lines]))
    # train.compilation_cache_dir's default, unused on the tests' 8 CPU devices
    # (grpo_core.compiles.persistent_cache_safe): the run compiled everything itself.
    assert not (run_dir / "xla-cache").exists() and summary["compiles"]["update"]["from_cache"] == 0


def test_rerun_of_a_finished_run_computes_and_loads_nothing(finished_run, monkeypatch, caplog):
    cfg, run_dir, summary = finished_run
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "run.lock"}

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run loaded its model")

    monkeypatch.setattr("tasks.session.resolve_model", no_model)
    with caplog.at_level(logging.INFO, logger="grpo_flows.train"):
        again = run(cfg, run_dir)
    assert again == json.loads((run_dir / "summary.json").read_text())
    assert again["params_sha256"] == summary["params_sha256"]
    assert "nothing to do: 2 steps already trained" in caplog.messages
    after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert before == after, "a finished run's rerun rewrote files"


def test_moved_run_resumes_with_every_finished_phase_cached(finished_run, tmp_path):
    cfg, run_dir, summary = finished_run
    first = shutil.copytree(run_dir, tmp_path / "a" / run_dir.name)
    moved = shutil.move(first, tmp_path / "b" / run_dir.name)
    for record in (Path(moved) / "prefect" / "keys").iterdir():
        assert not Path(json.loads(record.read_text())["storage_key"]).is_absolute()
    (Path(moved) / "summary.json").unlink()  # not finished: the step flows run, on the cache
    artifacts = {p: p.read_bytes() for p in (Path(moved) / "steps").rglob("*.*")}
    again = run(cfg, moved)
    assert again["params_sha256"] == summary["params_sha256"]
    lines = [json.loads(l) for l in (Path(moved) / "metrics.jsonl").read_text().splitlines()]
    assert [l["cached"] for l in lines] == [True, True]  # every phase of both steps a cache hit
    assert {p: p.read_bytes() for p in (Path(moved) / "steps").rglob("*.*")} == artifacts


def test_broken_artifact_is_recomputed_with_a_warning(finished_run, caplog):
    cfg, run_dir, summary = finished_run
    reward_file = run_dir / "steps" / "step-000001" / "reward.parquet"
    original = reward_file.read_bytes()
    reward_file.write_bytes(original[:-10] + b"corrupted!")
    with caplog.at_level(logging.WARNING, logger="grpo_flows.cache"):
        again = run(cfg, run_dir)
    assert any("sha256 changed" in r.message for r in caplog.records)
    assert reward_file.read_bytes() == original  # recomputed from the cached rollout: same content
    assert again["params_sha256"] == summary["params_sha256"]


def test_second_train_on_a_run_dir_in_use_refuses(tmp_path):
    lock = RunLock(tmp_path)
    try:
        with pytest.raises(UserError, match="in use by another `grpo train`"):
            run(tiny_config(), tmp_path)
    finally:
        lock.release()


def test_changed_config_on_existing_run_dir_refuses(finished_run):
    _, run_dir, _ = finished_run
    with pytest.raises(UserError, match="different config .*rollout"):
        run(tiny_config("rollout.n=4"), run_dir)


def test_wandb_offline_writes_the_run_metrics(tmp_path):
    cfg = tiny_config("train.steps=1", "logging.wandb.mode=offline", "loss.beta=0.1")
    run(cfg, tmp_path)
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    rows = read_wandb_history(files[0])
    assert [row["_step"] for row in rows] == [0]
    logged = rows[0]
    expected = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["reward_mean"] == pytest.approx(expected["reward_mean"])
    assert logged["loss"] == pytest.approx(expected["loss"])
    assert "kl" in expected and logged["kl"] == pytest.approx(expected["kl"])  # beta > 0: KL to the reference


def test_one_prefect_client_serves_every_step(tmp_path, monkeypatch):
    # Each new sync client costs a TLS context from the CA bundle (~25 ms); without the
    # shared one, every task run and progress update made its own (5 per step).
    from prefect.client.orchestration import SyncPrefectClient

    made, init = [], SyncPrefectClient.__init__
    monkeypatch.setattr(SyncPrefectClient, "__init__", lambda self, *a, **k: made.append(1) or init(self, *a, **k))
    run(tiny_config("train.steps=3"), tmp_path / "run")
    assert len(made) <= 2, len(made)  # the shared one, and one the flow engine makes at start
