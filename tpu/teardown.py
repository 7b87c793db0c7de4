"""Deleting what a run made: its teardown, the flow cancellation/crash hooks and the TTL reaper."""
from __future__ import annotations

from tpu.provider import QUEUED_RESOURCE, RUN_LABEL, Node, Provider
from tpu.spec import TpuRequest, make_provider, node_name


def deletion_order(found: list[Node]) -> list[Node]:
    """Queued resources first: force-deleting one takes its node with it."""
    return sorted(found, key=lambda record: record.kind != QUEUED_RESOURCE)


def delete_all(provider: Provider, found: list[Node]) -> list[str]:
    """Delete each record in deletion order. Every record is tried; the first error is raised
    after the rest were deleted."""
    first_error = None
    for record in deletion_order(found):
        try:
            provider.delete(record.name, record.zone, record.kind)
        except Exception as exc:  # noqa: BLE001 - keep deleting the others, then raise
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return [record.describe() for record in found]


def delete_labelled(provider: Provider, labels: dict[str, str], zones: tuple[str, ...]) -> list[str]:
    """Delete every node and queued resource carrying `labels` in `zones`; what was deleted."""
    return delete_all(provider, provider.list(labels, zones))


def delete_run_nodes(flow, flow_run, state) -> None:
    """Prefect on_cancellation/on_crashed hook: delete every node and queued resource labelled
    with this flow run, in every requested zone (a superset of the zones the run touched; it
    may have died before it knew them). The provider's calls retry transient errors."""
    from prefect.logging.loggers import flow_run_logger

    params = flow_run.parameters
    tpu = TpuRequest.model_validate(params.get("tpu") or {})
    log = flow_run_logger(flow_run, flow).warning  # the run's own log, also outside its context
    backend = make_provider(params.get("provider", "gcp"), tpu, log=log)
    deleted = delete_labelled(backend, {RUN_LABEL: node_name(str(flow_run.id))}, tuple(tpu.zones))
    log(f"teardown after {state.name if state else 'the end'}: deleted {', '.join(deleted) or 'nothing'}")


def expired(nodes: list[Node], ttl_s: float, now: float) -> list[Node]:
    """Records created more than ttl_s seconds before `now` (unknown creation time counts as old)."""
    return [n for n in nodes if now - (n.created_at or 0.0) > ttl_s]
