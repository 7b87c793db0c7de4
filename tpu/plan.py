"""`grpo smoke --dry-run`: every API request and command the smoke flow would run, in order,
built by the same functions the flow uses (nothing is sent, nothing is created)."""
from __future__ import annotations

import json
import shlex
import site
import sys

from tpu import scripts
from tpu.gcp import node_body, node_path, queued_resource_body, scp_argv, ssh_argv
from tpu.provider import NODE, OWNER_LABELS, QUEUED_RESOURCE, RUN_LABEL, NodeSpec
from tpu.repo import Checkout
from tpu.spec import TpuRequest, node_spec

API = "https://tpu.googleapis.com/v2/"
WINNING_ZONE = "<first zone that accepts>"


def _commands(kind: str, checkout: Checkout, train_argv: list[str]) -> list[tuple[str, list[str], str]]:
    """(stage, argv, note) in run order."""
    sites = tuple(site.getsitepackages())
    staged = [("bootstrap", scripts.bootstrap_commands(kind, sys.executable)),
              ("sync", scripts.sync_commands(checkout.source, checkout.commit)),
              ("install", scripts.install_commands(kind, sites))]
    rows = [(stage, argv, "") for stage, commands in staged for argv in commands]
    rows.append(("secrets", scripts.write_secret_command(), "stdin: the W&B key (from $WANDB_API_KEY or the Secret block), if any"))
    rows.append(("launch", scripts.launch_command(train_argv), ""))
    rows.append(("monitor", scripts.monitor_command(), "repeated until the job ends"))
    return rows


def _gcp_provision(spec: NodeSpec, project: str) -> list[str]:
    """The create requests, one zone after the other until one gives a node."""
    if spec.provisioning == "direct":
        lines = [f"[provision] POST {API}{node_path(project, z)}/nodes?nodeId={spec.name} "
                 f"{json.dumps(node_body(spec), sort_keys=True)}" for z in spec.zones]
    else:
        lines = []
        for zone in spec.zones:
            body = json.dumps(queued_resource_body(spec, project, zone), sort_keys=True)
            lines.append(f"[provision] POST {API}{node_path(project, zone)}/queuedResources?queuedResourceId={spec.name} {body}")
            lines.append(f"[provision] GET {API}{node_path(project, zone, spec.name, QUEUED_RESOURCE)}  (until ACTIVE; "
                         f"FAILED or still waiting after {spec.queue_wait_s:.0f} s -> DELETE it, next zone)")
    lines.append(f"[provision] GET {API}{node_path(project, WINNING_ZONE, spec.name)}  (until state READY)")
    return lines


def _gcp_delete(spec: NodeSpec, project: str) -> list[str]:
    """Teardown: everything labelled with the run in every zone tried."""
    label = f"{RUN_LABEL}={spec.name}"
    kinds = (QUEUED_RESOURCE, NODE) if spec.provisioning == "queued" else (NODE,)
    lines = [f"[delete] GET {API}{node_path(project, '<each zone tried>')}/{{queuedResources,nodes}}  (labelled {label})"]
    for kind in kinds:
        force = "?force=true  (its node too)" if kind == QUEUED_RESOURCE else ""
        lines.append(f"[delete] DELETE {API}{node_path(project, '<each zone tried>', spec.name, kind)}{force}")
    return lines


def smoke_plan(kind: str, tpu: TpuRequest, checkout: Checkout, train_argv: list[str], project: str = "PROJECT") -> list[str]:
    name = "grpo-smoke-dryrun"
    spec = node_spec(name, tpu, {**OWNER_LABELS, RUN_LABEL: name})
    lines = []
    if kind == "gcp":
        lines += _gcp_provision(spec, project)
    else:
        lines.append(f"[provision] mkdir {tpu.local_root or '$GRPO_LOCAL_TPU_ROOT'}/{name}/worker-0..{tpu.workers - 1}")
    for stage, argv, note in _commands(kind, checkout, train_argv):
        shown = ssh_argv(name, WINNING_ZONE, project, "<each worker>", argv) if kind == "gcp" else argv
        lines.append(f"[{stage}] {shlex.join(shown)}" + (f"  ({note})" if note else ""))
    for remote in (scripts.LOG_FILE, f"{scripts.RUN_DIR}/metrics.jsonl", f"{scripts.RUN_DIR}/summary.json"):
        shown = scp_argv(name, WINNING_ZONE, project, 0, remote, f"runs/smoke/{name}/") if kind == "gcp" else ["cp", remote, f"runs/smoke/{name}/"]
        lines.append(f"[fetch] {shlex.join(shown)}")
    if kind == "gcp":
        lines += _gcp_delete(spec, project)
    else:
        lines.append(f"[delete] {shlex.join(scripts.kill_command())}; rm -rf <local root>/{name}")
    return lines
