"""`reap-tpu-vms`: delete VMs and queued resources we created (owner labels) that are older
than a TTL.

Teardown in the smoke flow and its hooks covers normal failures; this catches the rest
(a killed worker, a lost network) so a forgotten v6e-8 does not keep billing. It looks in
its own `tpu.zones` and in every zone a run of the project recorded (tasks.tpu.record_zones),
so a VM made by a run with other zones is found too."""
from __future__ import annotations

import time

from prefect import flow

from tasks.tpu import delete_node, list_nodes, publish_report, run_log, used_zones
from tpu.provider import OWNER_LABELS
from tpu.report import StageReport
from tpu.spec import ProviderKind, TpuRequest, make_provider, project_of
from tpu.teardown import deletion_order, expired


@flow(name="reap-tpu-vms", persist_result=False)
def reap_flow(provider: ProviderKind = "gcp", tpu: TpuRequest = TpuRequest(), ttl_hours: float = 6.0,
              dry_run: bool = False) -> list[str]:
    """Delete (or with dry_run only list) owner-labelled nodes and queued resources older than
    ttl_hours, in tpu.zones plus every zone recorded by the project's runs."""
    backend = make_provider(provider, tpu, log=run_log)
    zones = sorted(set(tpu.zones) | set(used_zones(project_of(provider, tpu))))
    report = StageReport(f"reap-tpu-vms: older than {ttl_hours} h via {provider}" + (" (dry run)" if dry_run else ""))
    report.facts["zones"] = ", ".join(zones)
    with report.stage("list") as stage:
        found = list_nodes(backend, OWNER_LABELS, zones)
        old = deletion_order(expired(found, ttl_hours * 3600, time.time()))
        stage.note = f"{len(found)} labelled in {len(zones)} zones, {len(old)} expired"
    for record in old:
        with report.stage(f"delete {record.describe()}") as stage:
            if dry_run:
                stage.outcome, stage.note = "skipped", "dry run: would delete"
            else:
                delete_node(backend, record.name, record.zone, record.kind)
    publish_report(report.markdown(), "tpu-reaper", report.title)
    return [record.describe() for record in old]
