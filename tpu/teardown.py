"""Deleting VMs outside the happy path: flow cancellation/crash hooks and the TTL reaper."""
from __future__ import annotations

from tpu.provider import RUN_LABEL, Node
from tpu.spec import TpuRequest, make_provider, node_name


def delete_run_nodes(flow, flow_run, state) -> None:
    """Prefect on_cancellation/on_crashed hook: delete every node labelled with this flow run,
    in any of the requested zones (the run may have died before it knew the winning zone)."""
    params = flow_run.parameters
    tpu = TpuRequest.model_validate(params.get("tpu") or {})
    backend = make_provider(params.get("provider", "gcp"), tpu)
    for node in backend.list({RUN_LABEL: node_name(str(flow_run.id))}, tuple(tpu.zones)):
        backend.delete(node.name, node.zone)


def expired(nodes: list[Node], ttl_s: float, now: float) -> list[Node]:
    """Nodes created more than ttl_s seconds before `now` (unknown creation time counts as old)."""
    return [n for n in nodes if now - (n.created_at or 0.0) > ttl_s]
