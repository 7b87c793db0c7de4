"""`validate`: "behaves the same as before" = smoke of commit X compared with the stored
baseline of commit Y (same config, overrides and seed).

Baselines live under `baseline_dir/<config digest>/<commit>.jsonl` (metrics.jsonl of a
passing smoke) with `latest` naming the newest. A missing baseline of an explicit
`baseline_commit` is produced by a smoke of that commit first; with no baseline at all
the current run becomes the baseline. A passing run is promoted to `latest`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import flow

from flows.smoke import smoke_flow
from tasks.tpu import publish_report
from tpu.compare import Tolerances, compare_runs, read_metrics
from tpu.report import StageReport, artifact_key
from tpu.spec import ProviderKind, SmokeTimeouts, TpuRequest


class ValidationFailed(RuntimeError):
    """The commit trains, but not like the baseline."""


def baseline_dir_for(root: str, config: str, overrides: list[str]) -> Path:
    digest = hashlib.sha256("\n".join([config, *overrides]).encode()).hexdigest()[:16]
    return Path(root) / digest


def metrics_of(results: str) -> list[dict]:
    """Worker 0's metrics.jsonl from a smoke run's results directory."""
    found = sorted(Path(results).rglob("metrics.jsonl"))
    if not found:
        raise ValidationFailed(f"the smoke run left no metrics.jsonl under {results}")
    return read_metrics(found[0])


def _store(store: Path, commit: str, rows: list[dict]) -> None:
    import json

    store.mkdir(parents=True, exist_ok=True)
    (store / f"{commit}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    (store / "latest").write_text(commit)


@flow(name="validate", persist_result=False)
def validate_flow(commit: str | None = None, baseline_commit: str | None = None, provider: ProviderKind = "gcp",
                  config: str = "configs/smoke_v6e8.yaml", overrides: list[str] | None = None,
                  tpu: TpuRequest = TpuRequest(), timeouts: SmokeTimeouts = SmokeTimeouts(),
                  tolerances: Tolerances = Tolerances(), baseline_dir: str = "runs/baselines", promote: bool = True,
                  source_repo: str | None = None, job_command: list[str] | None = None,
                  job_env: dict[str, str] | None = None, results_dir: str = "runs/smoke",
                  compilation_cache_dir: str | None = None) -> dict:
    """compilation_cache_dir: the smoke runs' persistent compilation cache (see smoke_flow); not
    part of the baseline's identity, since it changes no result."""
    overrides = list(overrides or [])
    smoke = dict(provider=provider, config=config, overrides=overrides, tpu=tpu, timeouts=timeouts,
                 source_repo=source_repo, job_command=job_command, job_env=job_env, results_dir=results_dir,
                 compilation_cache_dir=compilation_cache_dir)
    store = baseline_dir_for(baseline_dir, config, overrides)
    baseline_commit = baseline_commit or ((store / "latest").read_text().strip() if (store / "latest").exists() else None)
    if baseline_commit and not (store / f"{baseline_commit}.jsonl").exists():
        baseline = smoke_flow(commit=baseline_commit, **smoke)
        _store(store, baseline["commit"], metrics_of(baseline["results"]))
        baseline_commit = baseline["commit"]
    current = smoke_flow(commit=commit, **smoke)
    rows = metrics_of(current["results"])
    report = StageReport(f"validate: {current['commit'][:12]} vs {(baseline_commit or 'none')[:12]}")
    report.facts.update(commit=current["commit"], baseline=baseline_commit or "none (this run becomes the baseline)")
    comparison = compare_runs(rows, read_metrics(store / f"{baseline_commit}.jsonl"), tolerances) if baseline_commit else None
    report.excerpt = "\n".join(comparison.lines) if comparison else ""
    report.facts["verdict"] = "same as before" if comparison is None or comparison.ok else "DIFFERENT"
    publish_report(report.markdown(), artifact_key("validate", tpu.accelerator_type), report.title)
    if comparison is not None and not comparison.ok:
        raise ValidationFailed("; ".join(line for line in comparison.lines if line.startswith("FAIL"))[:2000])
    if promote:
        _store(store, current["commit"], rows)
    return {"commit": current["commit"], "baseline": baseline_commit, "verdict": report.facts["verdict"]}
