"""`provision-tpu`: create a labelled TPU VM (zones in order, directly or queued) and wait
until READY.

For people who want a VM by hand; the smoke flow runs the same tasks inline. The VM
carries the owner labels, so `reap-tpu-vms` deletes it once its TTL has passed; a run that
fails after a create (the VM never became READY), is cancelled or crashes deletes what it
made at once.
"""
from __future__ import annotations

import uuid

from prefect import flow
from prefect.runtime import flow_run as current_run

from tasks.tpu import delete_labelled, provision, publish_report, record_zones, run_log, touched_zones, tpu_slot
from tpu.provider import OWNER_LABELS, RUN_LABEL
from tpu.report import StageReport, artifact_key
from tpu.spec import ProviderKind, TpuRequest, make_provider, node_name, node_spec, project_of
from tpu.teardown import delete_run_nodes


@flow(name="provision-tpu", persist_result=False, on_cancellation=[delete_run_nodes], on_crashed=[delete_run_nodes])
def provision_flow(provider: ProviderKind = "gcp", tpu: TpuRequest = TpuRequest(), ready_timeout_s: float = 1800) -> dict:
    """Returns the node's name, zone, worker count and state."""
    name = node_name(str(current_run.id or uuid.uuid4()))
    backend = make_provider(provider, tpu, log=run_log)
    report = StageReport(f"provision-tpu: {tpu.accelerator_type} via {provider}")
    report.facts["provisioning"] = tpu.provisioning_note()
    record_zones(project_of(provider, tpu), tpu.zones)
    try:
        with tpu_slot(tpu.accelerator_type), report.stage("provision") as stage:
            node = provision(backend, node_spec(name, tpu, {**OWNER_LABELS, RUN_LABEL: name}), ready_timeout_s, report)
            stage.note = f"{node.name} in {node.zone}"
    except Exception:
        with report.stage("delete") as stage:
            deleted = delete_labelled(backend, {RUN_LABEL: name}, touched_zones(report, tpu.zones))
            stage.note = ", ".join(deleted) or "nothing left"
        raise
    finally:
        publish_report(report.markdown(), artifact_key("tpu-provision", tpu.accelerator_type), report.title)
    return {"name": node.name, "zone": node.zone, "workers": node.workers, "state": node.state}
