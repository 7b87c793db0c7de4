"""`tpu-smoke`: prove a commit still trains on a fresh TPU VM, unattended.

    check commit -> preflight -> provision -> bootstrap -> sync -> install -> secrets
      -> launch -> monitor -> fetch -> delete (always) -> report artifact

Teardown in `finally` deletes every node and queued resource labelled with the run in every
zone the create tried (a failed zone can leave a node behind); the cancellation/crash
hooks do the same in every requested zone (a cancelled or crashed run may never reach
`finally`). Each stage's timing and outcome, and every zone tried with its reason and time,
go into the markdown artifact `tpu-smoke-<accelerator>`.
"""
from __future__ import annotations

import site
import sys
import uuid
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_run

from schemas import build_run_config
from tasks.tpu import (SmokeFailed, delete_labelled, fetch_results, launch_job, monitor_job, provision, publish_report,
                       record_zones, run_commands, run_log, run_preflight, touched_zones, tpu_slot, write_secret)
from tpu import scripts
from tpu.errors import JobOutcome
from tpu.provider import OWNER_LABELS, RUN_LABEL, Provider
from tpu.report import StageReport, artifact_key
from tpu.repo import PROJECT_ROOT, Checkout, read_file_at, resolve_checkout
from tpu.teardown import delete_run_nodes
from tpu.spec import ProviderKind, SmokeTimeouts, TpuRequest, make_provider, node_name, node_spec, project_of


def _run_on_vm(backend: Provider, tpu: TpuRequest, checkout: Checkout, train_argv: list[str], steps: int,
               timeouts: SmokeTimeouts, results: Path, secret_block: str | None, report: StageReport) -> JobOutcome:
    name = node_name(str(current_run.id or uuid.uuid4()))
    spec = node_spec(name, tpu, {**OWNER_LABELS, RUN_LABEL: name})
    try:
        with report.stage("provision") as stage:
            node = provision(backend, spec, timeouts.ready_s, report)
            stage.note = f"{tpu.provisioning}: {node.name} in {node.zone} after {len(report.zones)} zone(s)"
        with report.stage("bootstrap"):
            run_commands(backend, node, "bootstrap", scripts.bootstrap_commands(backend.kind, sys.executable), timeouts.command_s)
        with report.stage("sync"):
            run_commands(backend, node, "sync", scripts.sync_commands(checkout.source, checkout.commit), timeouts.command_s)
        with report.stage("install"):
            sites = tuple(site.getsitepackages())
            run_commands(backend, node, "install", scripts.install_commands(backend.kind, sites), timeouts.command_s)
        with report.stage("secrets") as stage:
            stage.note = "W&B key written to a 0600 file" if write_secret(backend, node, secret_block) else "no W&B key"
        with report.stage("launch"):
            launch_job(backend, node, train_argv)
        with report.stage("monitor") as stage:
            outcome = monitor_job(backend, node, steps, timeouts.job_s, timeouts.poll_s)
            stage.note, stage.outcome = outcome.message, "ok" if outcome.ok else "failed"
        with report.stage("fetch") as stage:
            stage.note = f"{len(fetch_results(backend, node, str(results)))} files -> {results}"
        return outcome
    finally:
        with report.stage("delete") as stage:
            deleted = delete_labelled(backend, {RUN_LABEL: name}, touched_zones(report, tpu.zones))
            stage.note = ", ".join(deleted) or "nothing left"


@flow(name="tpu-smoke", persist_result=False, on_cancellation=[delete_run_nodes], on_crashed=[delete_run_nodes])
def smoke_flow(
    provider: ProviderKind = "gcp",
    config: str = "configs/smoke_v6e8.yaml",
    overrides: list[str] | None = None,
    tpu: TpuRequest = TpuRequest(),
    commit: str | None = None,
    timeouts: SmokeTimeouts = SmokeTimeouts(),
    job_env: dict[str, str] | None = None,
    job_command: list[str] | None = None,
    preflight: bool = True,
    compile_check: bool = True,
    source_repo: str | None = None,
    results_dir: str = "runs/smoke",
    wandb_secret_block: str | None = None,
    compilation_cache_dir: str | None = None,
) -> dict:
    """Smoke-test `commit` (default HEAD) with `config` (a path in the repo) on a fresh VM.

    preflight: check the config fits before renting; compile_check: and compile its programs
    for the slice with XLA on this worker (`grpo preflight --compile`, needs the tpu extra),
    so no VM is rented for a config that does not compile or fit. compilation_cache_dir:
    where the training job keeps its compiled programs across runs (train.compilation_cache_dir:
    a gs:// path the VMs can write for gcp, a folder on this machine for local); none = the
    fresh VM's empty run directory."""
    overrides = list(overrides or [])
    report = StageReport(f"tpu-smoke: {tpu.accelerator_type} via {provider}")
    backend = make_provider(provider, tpu, log=run_log)
    with report.stage("check commit") as stage:
        checkout = resolve_checkout(source_repo or PROJECT_ROOT, commit, provider)
        config_text = read_file_at(source_repo or PROJECT_ROOT, checkout.commit, config)
        steps = build_run_config(yaml.safe_load(config_text) or {}, overrides, source=config).train.steps
        stage.note = f"{checkout.commit[:12]}, {steps} steps expected"
    report.facts.update(commit=checkout.commit, config=config, overrides=" ".join(overrides) or "none",
                        provisioning=tpu.provisioning_note())
    report.facts["compilation cache"] = compilation_cache_dir or "none (empty on the fresh VM)"
    train_argv = scripts.train_command(config, scripts.job_overrides(overrides, compilation_cache_dir),
                                       tuple(job_command or scripts.TRAIN_COMMAND), job_env)
    results = Path(results_dir) / node_name(str(current_run.id or uuid.uuid4()))
    try:
        with report.stage("preflight") as stage:
            stage.note, report.sections["XLA's memory per device (compiled for the slice on the worker)"] = (
                run_preflight(config_text, overrides, tpu.accelerator_type, compile_check) if preflight
                else ("disabled", ""))
            stage.outcome = "skipped" if "unavailable" in stage.note or not preflight else "ok"
        record_zones(project_of(provider, tpu), tpu.zones)
        with tpu_slot(tpu.accelerator_type):
            outcome = _run_on_vm(backend, tpu, checkout, train_argv, steps, timeouts, results, wandb_secret_block, report)
        report.facts.update(outcome=f"{outcome.reason}: {outcome.message}")
        report.excerpt = outcome.excerpt
    finally:
        publish_report(report.markdown(), artifact_key("tpu-smoke", tpu.accelerator_type), report.title)
    if not outcome.ok:
        raise SmokeFailed(f"smoke failed: {outcome.reason}: {outcome.message}\n{outcome.excerpt}".strip())
    get_run_logger().info("smoke passed: %s", outcome.message)
    return {"commit": checkout.commit, "zone": report.facts.get("zone"), "steps": steps, "results": str(results),
            "stages": [(s.name, s.outcome, round(s.seconds, 1)) for s in report.stages]}
