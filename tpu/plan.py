"""`grpo smoke --dry-run`: every API request and command the smoke flow would run, in order,
built by the same functions the flow uses (nothing is sent, nothing is created)."""
from __future__ import annotations

import json
import shlex
import site
import sys

from tpu import scripts
from tpu.gcp import node_body, node_path, scp_argv, ssh_argv
from tpu.provider import OWNER_LABELS, RUN_LABEL
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


def smoke_plan(kind: str, tpu: TpuRequest, checkout: Checkout, train_argv: list[str], project: str = "PROJECT") -> list[str]:
    name = "grpo-smoke-dryrun"
    spec = node_spec(name, tpu, {**OWNER_LABELS, RUN_LABEL: name})
    lines = []
    if kind == "gcp":
        body = json.dumps(node_body(spec), sort_keys=True)
        lines += [f"[provision] POST {API}{node_path(project, z)}/nodes?nodeId={name} {body}" for z in spec.zones]
        lines.append(f"[provision] GET {API}{node_path(project, WINNING_ZONE, name)}  (until state READY)")
    else:
        lines.append(f"[provision] mkdir {tpu.local_root or '$GRPO_LOCAL_TPU_ROOT'}/{name}/worker-0..{tpu.workers - 1}")
    for stage, argv, note in _commands(kind, checkout, train_argv):
        shown = ssh_argv(name, WINNING_ZONE, project, "<each worker>", argv) if kind == "gcp" else argv
        lines.append(f"[{stage}] {shlex.join(shown)}" + (f"  ({note})" if note else ""))
    for remote in (scripts.LOG_FILE, f"{scripts.RUN_DIR}/metrics.jsonl", f"{scripts.RUN_DIR}/summary.json"):
        shown = scp_argv(name, WINNING_ZONE, project, 0, remote, f"runs/smoke/{name}/") if kind == "gcp" else ["cp", remote, f"runs/smoke/{name}/"]
        lines.append(f"[fetch] {shlex.join(shown)}")
    if kind == "gcp":
        lines.append(f"[delete] DELETE {API}{node_path(project, WINNING_ZONE, name)}")
    else:
        lines.append(f"[delete] {shlex.join(scripts.kill_command())}; rm -rf <local root>/{name}")
    return lines
