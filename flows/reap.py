"""`reap-tpu-vms`: delete VMs we created (owner labels) that are older than a TTL.

Teardown in the smoke flow and its hooks covers normal failures; this catches the rest
(a killed worker, a lost network) so a forgotten v6e-8 does not keep billing."""
from __future__ import annotations

import time

from prefect import flow

from tasks.tpu import delete_node, list_nodes, publish_report
from tpu.provider import OWNER_LABELS
from tpu.report import StageReport
from tpu.spec import ProviderKind, TpuRequest, make_provider
from tpu.teardown import expired


@flow(name="reap-tpu-vms", persist_result=False)
def reap_flow(provider: ProviderKind = "gcp", tpu: TpuRequest = TpuRequest(), ttl_hours: float = 6.0,
              dry_run: bool = False) -> list[str]:
    """Delete (or with dry_run only list) owner-labelled nodes older than ttl_hours in tpu.zones."""
    backend = make_provider(provider, tpu)
    report = StageReport(f"reap-tpu-vms: older than {ttl_hours} h via {provider}")
    with report.stage("list") as stage:
        nodes = list_nodes(backend, OWNER_LABELS, list(tpu.zones))
        old = expired(nodes, ttl_hours * 3600, time.time())
        stage.note = f"{len(nodes)} labelled, {len(old)} expired"
    for node in old:
        with report.stage(f"delete {node.name}@{node.zone}") as stage:
            if dry_run:
                stage.outcome, stage.note = "skipped", "dry run"
            else:
                delete_node(backend, node.name, node.zone)
    publish_report(report.markdown(), "tpu-reaper", report.title)
    return [f"{n.name}@{n.zone}" for n in old]
