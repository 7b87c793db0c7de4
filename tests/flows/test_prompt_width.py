"""rollout.prompt_width "run_max": the prompt width never shrinks within a run, and a resumed
run rebuilds it from its cached rollouts (a tiny random model, through the Prefect harness).

With max_prompt_tokens=256 the tiny config's steps 0-4 and 6 have their longest prompt in the
160 bucket and step 5 in the 112 bucket, so per-batch widths would compile a second sampler
and a second update program at step 5."""
import asyncio
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks import session as session_module
from train_helpers import tiny_config

pytestmark = pytest.mark.usefixtures("prefect_harness")

STEPS = 7
SETTINGS = ("rollout.max_prompt_tokens=256", f"train.steps={STEPS}", "checkpoint.every_steps=2",
            "rollout.prompt_width=run_max")


def run(cfg, run_dir):
    from flows.train import train_flow

    return asyncio.run(train_flow(config=cfg, run_dir=str(run_dir)))


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run-max")
    return run_dir, run(tiny_config(*SETTINGS), run_dir)


def test_width_never_shrinks_and_compiles_once(uninterrupted):
    run_dir, summary = uninterrupted
    lines = metrics(run_dir)
    assert [l["prompt_width"] for l in lines] == [160.0] * STEPS  # step 5's prompts alone take 112 slots
    assert [l["prompt_width_floor"] for l in lines] == [0.0] + [160.0] * (STEPS - 1)
    rollout = pq.read_table(run_dir / "steps" / "step-000005" / "rollout.parquet")
    prompts = np.asarray(rollout.column("prompt_length"))
    assert prompts.max() <= 112 and lines[5]["pad_prompt_ratio"] == pytest.approx(160 * len(prompts) / prompts.sum() - 1)
    # Only step 0 compiles (or finds its programs compiled); step 5 reuses them.
    assert all("compiles_rollout" not in l and "compiles_update" not in l for l in lines[1:])
    assert summary["compiles"]["rollout"]["programs"].get("jit(_generate_impl)", 0) <= 1


def test_batch_widths_follow_each_batch(tmp_path):
    """The default: step 5 gets its own narrower width (what run_max avoids)."""
    cfg = tiny_config(*SETTINGS[:1], "train.steps=6", "checkpoint.every_steps=6")
    run(cfg, tmp_path / "batch")
    lines = metrics(tmp_path / "batch")
    # (Step 0's programs may already be in this process from another test; step 5's are new.)
    assert "prompt_width" not in lines[0] and lines[5]["compiles_rollout"] >= 1 and lines[5]["compiles_update"] >= 1
    assert lines[5]["pad_prompt_ratio"] < lines[4]["pad_prompt_ratio"]


def test_resumed_run_rebuilds_the_width_from_its_artifacts(uninterrupted, tmp_path, monkeypatch):
    """A failure in step 5's rollout, then the same command again: steps 0-3 replay from the
    cache and the session restores the checkpoint after step 3. Step 5 must sample at 160
    (the widest width before it), as the uninterrupted run did, and end with its params."""
    run_dir = tmp_path / "resumed"
    cfg = tiny_config(*SETTINGS)
    monkeypatch.setenv("GRPO_FAULT_INJECT", "rollout:5:raise")
    with pytest.raises(Exception):
        run(cfg, run_dir)
    monkeypatch.delenv("GRPO_FAULT_INJECT")
    assert not session_module._SESSIONS  # the failed run's session is gone: the rerun starts afresh
    summary = run(cfg, run_dir)
    resumed = {l["step"]: l for l in metrics(run_dir)}
    assert resumed[5]["prompt_width"] == 160.0 and resumed[5]["prompt_width_floor"] == 160.0
    assert summary["params_sha256"] == uninterrupted[1]["params_sha256"]


def test_the_option_is_in_the_train_flows_ui_form():
    from prefect.utilities.callables import parameter_schema

    from flows.train import train_flow

    schema = parameter_schema(train_flow.fn).model_dump_for_openapi()
    option = schema["definitions"]["RolloutSection"]["properties"]["prompt_width"]
    assert option["enum"] == ["batch", "run_max"] and option["default"] == "batch" and option["description"]
