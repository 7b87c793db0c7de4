"""`grpo eval` / the `evaluate` flow: the comparison table, the cache, and bad --model values."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_helpers import make_run
from flows.cli.main import main
from flows.evaluate import build_report, evaluate_flow, table_rows
from flows.export import export_run
from schemas.manifests import PhaseManifest
from tasks.eval_models import ModelSource
from tasks.run_checkpoint import run_config

METRICS = ["accuracy", "reward", "tokens", "pass@1", "pass@k", "mean@k"]


def _completions(correct_greedy, correct_sampled_pk) -> pa.Table:
    """A minimal completions table: problems 0..P-1, one greedy row and k sampled rows each."""
    problems, k = np.asarray(correct_sampled_pk).shape
    greedy = {"prompt_id": list(range(problems)), "sample_id": [0] * problems, "decoding": ["greedy"] * problems,
              "reward_gsm8k_correct": list(correct_greedy), "reward_total": list(correct_greedy),
              "completion_length": [10] * problems}
    sampled = {"prompt_id": list(np.repeat(np.arange(problems), k)), "sample_id": list(np.tile(np.arange(k), problems)),
               "decoding": ["sampled"] * (problems * k), "reward_gsm8k_correct": list(np.ravel(correct_sampled_pk)),
               "reward_total": list(np.ravel(correct_sampled_pk)), "completion_length": [10] * (problems * k)}
    return pa.concat_tables([pa.table(greedy), pa.table(sampled)])


def test_report_means_differences_and_intervals(tmp_path):
    tables = {"base": _completions([0, 0, 1, 0], [[0, 0], [0, 1], [1, 1], [0, 0]]),
              "tuned": _completions([1, 1, 1, 0], [[1, 0], [1, 1], [1, 1], [0, 1]])}
    scored = []
    for name, table in tables.items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
        manifest = PhaseManifest(run_id="e", step=0, phase="eval", path=f"{name}.parquet", rows=table.num_rows,
                                 sha256="0" * 64, schema_version=1, seconds=1.5)
        scored.append((ModelSource(ref=name, name=name, kind="hf", path=name, fingerprint="f"), manifest, False))
    report = build_report(str(tmp_path), scored, samples=2)
    rows = {row["metric"]: row for row in report["comparison"]}
    assert list(rows) == METRICS and report["problems"] == 4
    assert rows["accuracy"]["base"] == 0.25 and rows["accuracy"]["tuned"] == 0.75
    diff = rows["accuracy"]["tuned - base"]
    assert diff["diff"] == pytest.approx(0.5) and 0.0 <= diff["low"] < 0.5 < diff["high"] <= 1.0
    assert rows["pass@k"]["base"] == 0.5 and rows["pass@k"]["tuned"] == 1.0
    assert rows["mean@k"]["tuned - base"]["diff"] == pytest.approx(3 / 8)
    cells = table_rows(report)
    assert [c["metric"] for c in cells] == ["accuracy (greedy)", "reward (greedy)", "completion tokens (greedy)",
                                            "pass@1", "pass@2", "mean@2"]
    assert cells[0]["tuned - base [95% interval]"].startswith("+0.500 [")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny run (checkpoints 1 and 2) and HF exports of both checkpoints."""
    root = tmp_path_factory.mktemp("eval-models")
    run_dir, _ = make_run(root, "tiny-qwen2")
    export_run(run_dir, root / "base", step=1)
    export_run(run_dir, root / "final", step=2)
    return root, run_dir


def test_eval_of_tiny_models_gives_the_table_and_is_cached_on_rerun(models, prefect_harness, tmp_path):
    root, run_dir = models
    refs = [str(root / "base"), str(run_dir), str(root / "final")]
    cfg, out_dir = run_config(run_dir), str(tmp_path / "eval")
    report = evaluate_flow(models=refs, config=cfg, samples=2, out_dir=out_dir)
    names = [m["name"] for m in report["models"]]
    assert names == ["base", "run", "final"] and [m["cached"] for m in report["models"]] == [False] * 3
    assert [row["metric"] for row in report["comparison"]] == METRICS
    for row in report["comparison"]:
        for other in ("run", "final"):
            diff = row[f"{other} - base"]
            assert diff["low"] <= diff["diff"] <= diff["high"]
        # The run directory and the export of the same checkpoint must decode the same tokens.
        assert row["final - base"] == pytest.approx(row["run - base"])
    tables = [pq.read_table(tmp_path / "eval" / m["completions"]) for m in report["models"]]
    assert [t.num_rows for t in tables] == [4 + 4 * 2] * 3
    assert tables[1].column("completion_ids").to_pylist() == tables[2].column("completion_ids").to_pylist()
    assert tables[0].column("completion_ids").to_pylist() != tables[1].column("completion_ids").to_pylist()
    assert json.loads((tmp_path / "eval" / "eval.json").read_text()) == json.loads(json.dumps(report))
    assert _table_artifact("eval-eval")[0]["metric"] == "accuracy (greedy)"  # key: <out dir name>-eval
    mtimes = [(tmp_path / "eval" / m["completions"]).stat().st_mtime_ns for m in report["models"]]

    again = evaluate_flow(models=refs, config=cfg, samples=2, out_dir=out_dir)
    assert [m["cached"] for m in again["models"]] == [True] * 3
    assert again["comparison"] == report["comparison"]
    assert [(tmp_path / "eval" / m["completions"]).stat().st_mtime_ns for m in again["models"]] == mtimes


def _table_artifact(key: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    data = found[-1].data
    return json.loads(data) if isinstance(data, str) else data


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_models_exit_2_before_anything_runs(models, tmp_path, capsys):
    _, run_dir = models
    config = str(run_dir / "config.yaml")
    assert main(["eval", "--model", str(tmp_path / "missing"), "--config", config, "--out", str(tmp_path / "e")]) == 2
    assert "--model" in _error_line(capsys) and not (tmp_path / "e").exists()
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--model", str(tmp_path / "empty"), "--config", config]) == 2
    assert "neither a run's config.yaml nor an HF config.json" in _error_line(capsys)
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main(["eval", "--model", str(tmp_path / "fresh"), "--config", config]) == 2
    assert "no complete checkpoint" in _error_line(capsys)


def test_the_evaluate_deployment_names_the_flow_and_its_parameters():
    import importlib
    import inspect
    from pathlib import Path

    import yaml

    spec = yaml.safe_load(Path("deployments/prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "evaluate")
    path, name = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    assert flow is evaluate_flow and flow.name == "evaluate"
    assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)


def test_a_new_checkpoint_or_other_settings_make_a_new_cache_key(tmp_path):
    import jax.numpy as jnp

    from grpo_core.checkpoint import Checkpoints
    from tasks.eval_models import resolve_source
    from tasks.evaluate import eval_input
    from tasks.run_checkpoint import load_run_checkpoint

    run_dir, _ = make_run(tmp_path, "tiny-llama", (1,))
    cfg, first = run_config(run_dir), resolve_source(str(run_dir))
    out = str(tmp_path / "e")  # eval_input keeps the directory's id in it
    key = eval_input(out, first, cfg, samples=0).cache_key()
    assert eval_input(out, resolve_source(str(run_dir)), cfg, samples=0).cache_key() == key
    assert eval_input(out, first, cfg, samples=4).cache_key() != key
    assert eval_input(out, first, cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"temperature": 0.5})}),
                      samples=0).cache_key() != key
    checkpoints = Checkpoints(run_dir / "checkpoints")
    checkpoints.save(2, load_run_checkpoint(run_dir).model.params, {"count": jnp.zeros(())}, {"next_step": 2})
    checkpoints.close()
    second = resolve_source(str(run_dir))
    assert second.step == 2 and eval_input(out, second, cfg, samples=0).cache_key() != key
