"""Prefect tasks of the TPU flows: each wraps one provider call or one local check.

Only idempotent steps retry (bootstrap/sync/install re-create what they make, fetch copies,
delete of a missing node is a no-op); below that, every Cloud TPU read, poll and delete
retries transient API errors itself (tpu.retry), so waiting and monitoring survive a blip.
Nothing is cached or persisted: these are side effects, and the W&B key is read inside
`write_secret` so it never becomes a Prefect parameter or result.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from grpo_core.errors import UserError
from tpu import scripts, teardown
from tpu.errors import JobOutcome
from tpu.monitor import job_verdict
from tpu.provider import NODE, Node, NodeSpec, Provider, Provisioned, ProvisionError
from tpu.report import StageReport, artifact_key

EFFECT = {"cache_policy": NO_CACHE, "persist_result": False}
FETCHED = (scripts.LOG_FILE, f"{scripts.RUN_DIR}/metrics.jsonl", f"{scripts.RUN_DIR}/summary.json")
ZONES_KEY, PAGE = "tpu-zones", 200


class SmokeFailed(RuntimeError):
    """The smoke job ran but did not succeed; the message holds the reason and an excerpt."""


@task(**EFFECT)
def run_preflight(config_text: str, overrides: list[str], accelerator_type: str, compile: bool = False) -> tuple[str, str]:
    """`grpo preflight --tpu TYPE [--compile]` on this machine (the worker), before any VM exists.

    Returns (verdict line, XLA's per-phase table or ""); 'unavailable' when the command is
    not installed. A config that does not fit (exit 3), does not compile, or cannot be
    checked (no libtpu for --compile: exit 2) stops the flow here."""
    if importlib.util.find_spec("flows.cli.preflight_cmd") is None:
        return "preflight unavailable (flows/cli/preflight_cmd.py is not installed); skipped", ""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(config_text)
    sets = [arg for item in overrides for arg in ("--set", item)]
    argv = [sys.executable, "-m", "flows.cli.main", "preflight", "--config", handle.name, *sets, "--tpu", accelerator_type]
    done = subprocess.run(argv + (["--compile"] if compile else []), capture_output=True, text=True)
    os.unlink(handle.name)
    if done.returncode == 3:
        detail = (done.stderr.strip() or done.stdout.strip())[-500:]
        raise UserError(f"preflight: the config will not fit on {accelerator_type}: {detail}", 3)
    if done.returncode:
        raise UserError(f"preflight failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")
    lines = done.stdout.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("XLA's TPU compiler")), len(lines))
    return (lines or ["fits"])[-1][:200], "\n".join(lines[start:-1])


def run_log(message: str) -> None:
    """The providers' lines (one per zone tried, queue states, API retries) into the log of
    the run they happen in, or the `grpo.tpu` logger outside a run."""
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger("grpo.tpu")
    logger.info(message)


@task(**EFFECT)
def create_node(provider: Provider, spec: NodeSpec) -> Provisioned:
    made = provider.create(spec)
    get_run_logger().info("created %s in %s (%d worker(s)) after %d zone(s)", made.node.name, made.node.zone,
                          made.node.workers, len(made.attempts))
    return made


@task(**EFFECT)
def wait_until_ready(provider: Provider, node: Node, timeout_s: float) -> Node:
    return provider.wait_ready(node, timeout_s)


def provision(provider: Provider, spec: NodeSpec, ready_s: float, report: StageReport) -> Node:
    """create_node, then wait_until_ready. Every zone tried goes into report.zones, also
    when no zone gave a node."""
    try:
        made = create_node(provider, spec)
    except ProvisionError as exc:
        report.zones = list(exc.attempts)
        raise
    report.zones = list(made.attempts)
    report.facts.update(zone=made.node.zone, node=made.node.name, workers=str(made.node.workers))
    return wait_until_ready(provider, made.node, ready_s)


def touched_zones(report: StageReport, requested: list[str]) -> list[str]:
    """Zones a create tried (it may have left something there); all requested ones when the
    create never reported back."""
    tried = [a.zone for a in report.zones if a.outcome != "skipped_region"]
    return tried or list(requested)


@task(retries=1, retry_delay_seconds=5, task_run_name="{stage}", **EFFECT)
def run_commands(provider: Provider, node: Node, stage: str, commands: list[list[str]], timeout_s: float) -> None:
    """Run each command on every worker, in order; stop at the first failure."""
    for argv in commands:
        for result in provider.run(node, argv, worker="all", timeout_s=timeout_s):
            if not result.ok:
                raise RuntimeError(f"{stage}: `{argv[0]} {argv[1] if len(argv) > 1 else ''}` failed on worker "
                                   f"{result.worker} (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def load_wandb_key(secret_block: str | None) -> str | None:
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    if secret_block:
        from prefect.blocks.system import Secret

        return Secret.load(secret_block).get()
    return None


@task(**EFFECT)
def write_secret(provider: Provider, node: Node, secret_block: str | None) -> bool:
    """W&B key over stdin into a 0600 file on every worker. Returns whether there was a key."""
    key = load_wandb_key(secret_block)
    if not key:
        return False
    results = provider.run(node, scripts.write_secret_command(), worker="all", stdin=key.encode(), timeout_s=120)
    if not all(r.ok for r in results):
        raise RuntimeError("writing the W&B key file failed on some worker")
    return True


@task(**EFFECT)
def launch_job(provider: Provider, node: Node, train_argv: list[str]) -> None:
    for result in provider.run(node, scripts.launch_command(train_argv), worker="all", timeout_s=120):
        if not result.ok:
            raise RuntimeError(f"launch failed on worker {result.worker}: {result.stderr.strip()[-500:]}")


def _poll(provider: Provider, node: Node) -> list[dict]:
    results = provider.run(node, scripts.monitor_command(), worker="all", timeout_s=120)
    return [scripts.parse_monitor(r.stdout) if r.ok else {"launched": True, "alive": True} for r in results]


@task(**EFFECT)
def monitor_job(provider: Provider, node: Node, expected_steps: int, timeout_s: float, poll_s: float) -> JobOutcome:
    """Poll until the job ends on every worker, one ends badly, the node is preempted, or timeout."""
    logger, deadline, last_step = get_run_logger(), time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        current = provider.get(node.name, node.zone)
        if current is None or current.state in ("PREEMPTED", "TERMINATED"):
            state = current.state if current else "DELETED"
            return JobOutcome("preempted", f"node {node.name} in {node.zone} became {state} during training")
        statuses = _poll(provider, node)
        if statuses[0].get("last_step", 0) != last_step:
            last_step = statuses[0].get("last_step", 0)
            logger.info("step %d/%d", last_step, expected_steps)
        verdict = job_verdict(statuses, expected_steps)
        if verdict is not None:
            return verdict
        time.sleep(poll_s)
    return JobOutcome("timeout", f"job did not finish within {timeout_s:.0f}s (last step {last_step})")


@task(retries=2, retry_delay_seconds=5, **EFFECT)
def fetch_results(provider: Provider, node: Node, dest: str) -> list[str]:
    """Copy the log, metrics and summary of every worker (missing files are skipped)."""
    fetched = []
    for worker in range(node.workers):
        for remote in FETCHED:
            local = Path(dest) / (f"worker-{worker}" if node.workers > 1 else "") / Path(remote).name
            try:
                provider.copy_from(node, remote, str(local), worker=worker)
            except (FileNotFoundError, OSError):
                continue
            fetched.append(str(local))
    return fetched


@task(retries=2, retry_delay_seconds=10, **EFFECT)
def delete_node(provider: Provider, name: str, zone: str, kind: str = NODE) -> bool:
    deleted = provider.delete(name, zone, kind)
    get_run_logger().info("deleted %s %s in %s" if deleted else "%s %s in %s was already gone", kind, name, zone)
    return deleted


@task(retries=2, retry_delay_seconds=10, **EFFECT)
def delete_labelled(provider: Provider, labels: dict[str, str], zones: list[str]) -> list[str]:
    """Delete every node and queued resource carrying `labels` in `zones` (a run's teardown)."""
    deleted = teardown.delete_labelled(provider, labels, tuple(zones))
    get_run_logger().info("teardown in %s: deleted %s", ", ".join(zones), ", ".join(deleted) or "nothing")
    return deleted


@task(**EFFECT)
def list_nodes(provider: Provider, labels: dict[str, str], zones: list[str]) -> list[Node]:
    return provider.list(labels, tuple(zones))


@task(**EFFECT)
def record_zones(project: str, zones: list[str]) -> None:
    """The zones this run may touch, kept as a keyed table artifact of the run (written before
    any create, so a run killed mid-create is on record): the reaper reads every run's."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact([{"zone": zone} for zone in zones], key=artifact_key(ZONES_KEY, project),
                          description=f"zones a TPU run in project {project} may have used")


@task(**EFFECT)
def used_zones(project: str) -> list[str]:
    """Every zone that record_zones recorded for `project`, over all runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    only = ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(ZONES_KEY, project)]))
    zones, offset = set(), 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_artifacts(artifact_filter=only, limit=PAGE, offset=offset)
            for artifact in page:
                rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
                zones.update(row["zone"] for row in rows or [])
            if len(page) < PAGE:
                return sorted(zones)
            offset += PAGE


@task(**EFFECT)
def publish_report(markdown: str, key: str, description: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)


@contextlib.contextmanager
def tpu_slot(accelerator_type: str):
    """Hold one slot of the global concurrency limit `tpu-<type>` (guards quota).

    Without a configured limit (or a server that has none) the run goes ahead unguarded."""
    from prefect.concurrency.sync import concurrency

    stack = contextlib.ExitStack()
    try:
        stack.enter_context(concurrency(f"tpu-{accelerator_type}", occupy=1, strict=False))
    except Exception as exc:  # noqa: BLE001 - a missing limit must not block a smoke run
        get_run_logger().warning("no concurrency limit tpu-%s (%s); running unguarded", accelerator_type, exc)
    with stack:
        yield
