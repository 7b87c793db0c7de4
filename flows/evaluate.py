"""The `evaluate` flow: did GRPO help? Models side by side on the config's held-out problems.

    resolve-model --> score-model (cached per model) --> compare --> eval.json + table artifact

Each model is decoded greedily on the first eval.num_prompts held-out problems (and,
with samples=k, k times at rollout.temperature), scored with the training rewards, and
its completions written as Parquet under `out_dir/completions/`. The first model is the
baseline: every other model's difference from it comes with a 95% paired-bootstrap
interval over problems (grpo_core.stats). Rerunning the same eval is a cache hit per model.
"""
import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from flows.observe import artifact_key
from grpo_core.artifacts import atomic_write_bytes, read_table
from grpo_core.evaluation import problem_scores
from grpo_core.stats import compare_scores
from schemas.run import RunConfig
from tasks.cache import cache_options
from tasks.eval_models import ModelSource, resolve_source
from tasks.evaluate import eval_input, score_model

CONFIDENCE = 0.95


@task(name="resolve-model", task_run_name="resolve-{ref}")
def resolve_model_source(ref: str) -> ModelSource:
    return resolve_source(ref)


def _distinct_names(sources: list[ModelSource]) -> list[ModelSource]:
    """Two models with the same short name get their position appended (columns must differ)."""
    names = [s.name for s in sources]
    return [s if names.count(s.name) == 1 else s.model_copy(update={"name": f"{s.name}#{i + 1}"})
            for i, s in enumerate(sources)]


def metric_labels(samples: int) -> dict[str, str]:
    return {"accuracy": "accuracy (greedy)", "reward": "reward (greedy)", "tokens": "completion tokens (greedy)",
            "pass@1": "pass@1", "pass@k": f"pass@{samples}", "mean@k": f"mean@{samples}"}


def build_report(out_dir: str, scored: list[tuple], samples: int) -> dict:
    """eval.json's content: each model's mean scores and the comparison rows."""
    scores = [problem_scores(read_table(Path(out_dir) / manifest.path)) for _, manifest, _ in scored]
    names = [source.name for source, _, _ in scored]
    models = [{**source.model_dump(), "completions": manifest.path, "seconds": manifest.seconds, "cached": cached,
               "scores": manifest.stats} for source, manifest, cached in scored]
    return {"problems": len(scores[0]["accuracy"]), "samples": samples, "confidence": CONFIDENCE,
            "labels": metric_labels(samples), "models": models,
            "comparison": compare_scores(names, scores, confidence=CONFIDENCE)}


def table_rows(report: dict) -> list[dict[str, str]]:
    """The comparison as rows of strings: metric, each model, each difference [interval]."""
    rows = []
    for row in report["comparison"]:
        cells = {"metric": report["labels"][row["metric"]]}
        for key, value in row.items():
            if isinstance(value, dict):
                cells[f"{key} [{CONFIDENCE:.0%} interval]"] = f"{value['diff']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]"
            elif key != "metric":
                cells[key] = f"{value:.3f}" if row["metric"] != "tokens" else f"{value:.1f}"
        rows.append(cells)
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """Plain aligned columns for the terminal."""
    columns = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(r[c].ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def publish(report: dict, out_dir: str) -> str:
    """eval.json, the Prefect table artifact and the terminal text; returns the text."""
    atomic_write_bytes(Path(out_dir) / "eval.json", json.dumps(report, indent=1).encode())
    rows = table_rows(report)
    create_table_artifact(rows, key=artifact_key(Path(out_dir).resolve().name, "eval"),
                          description=f"{report['problems']} held-out problems; differences from the first model")
    timing = "\n".join(f"{m['name']}: {'cached, ' if m['cached'] else ''}scored in {m['seconds']:.1f} s"
                       for m in report["models"])
    return f"{report['problems']} held-out problems\n{format_table(rows)}\n{timing}"


@flow(name="evaluate", log_prints=True, persist_result=False)
def evaluate_flow(models: list[str], config: RunConfig, samples: int = 0, out_dir: str = "evals/default") -> dict:
    """Score `models` (run dirs, HF dirs, pullable names; the first is the baseline) side by side."""
    sources = _distinct_names([resolve_model_source(ref) for ref in models])
    opts = cache_options(out_dir)
    scored = []
    for source in sources:
        state = score_model.with_options(**opts)(eval_input(out_dir, source, config, samples), source, config,
                                                 samples, return_state=True)
        scored.append((source, state.result(), state.name == "Cached"))
    report = build_report(out_dir, scored, samples)
    print(publish(report, out_dir))
    return report
