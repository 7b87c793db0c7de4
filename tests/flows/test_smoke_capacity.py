"""The TPU flows under capacity trouble, on the gcp provider against the loopback fake TPU API
(with a stand-in for gcloud ssh): queued provisioning through expired and failed queues,
transient API errors while waiting and monitoring, a create that errors but leaves a node,
a stuck create, the cancellation hook's delete, and the reaper finding VMs outside its own
zones. Every scenario ends with 0 nodes and 0 queued resources in the fake."""
import functools
import types
import uuid

import pytest

from fake_tpu_api import FakeTpuApi  # noqa: E402
from smoke_helpers import ROOT, FakeSsh, make_repo  # noqa: E402

from tpu.provider import OWNER_LABELS, RUN_LABEL
from tpu.retry import RetryPolicy
from tpu.spec import SmokeTimeouts, TpuRequest, node_name

FAST = SmokeTimeouts(ready_s=10, command_s=60, job_s=60, poll_s=0.01)
EXPIRED = ("FAILED", 4, "The queued resource request expired before it could be fulfilled.")


@pytest.fixture
def gcp_env(tmp_path, monkeypatch):
    """A pushed repo, the ssh stand-in, and API retries that do not really sleep."""
    make_repo(tmp_path / "src", with_origin=True)
    ssh = FakeSsh(steps=3)
    monkeypatch.setattr("tpu.gcp.subprocess_runner", ssh)
    monkeypatch.setattr("tpu.gcp.RetryPolicy", functools.partial(RetryPolicy, sleep=lambda s: None))
    return ssh


def tpu_for(api: FakeTpuApi, zones, **kw) -> TpuRequest:
    return TpuRequest(project="p", api_endpoint=api.endpoint, anonymous=True, zones=list(zones), poll_s=0.01, **kw)


def smoke(tmp_path, tpu: TpuRequest):
    from flows.smoke import smoke_flow

    return smoke_flow(provider="gcp", config="cfg.yaml", tpu=tpu, timeouts=FAST, preflight=False,
                      source_repo=str(tmp_path / "src"), results_dir=str(tmp_path / "results"), return_state=True)


def artifact(key="tpu-smoke-v6e-8") -> str:
    from prefect.artifacts import Artifact

    return Artifact.get(key).data


def logged(state) -> list[str]:
    """The run's log messages as the Prefect API (the UI) has them, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    only = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return [log.message for log in client.read_logs(only, limit=200)]


def zone_lines(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith("zone ")]


def test_queued_smoke_through_expired_and_failed_queues_and_api_blips(prefect_harness, tmp_path, gcp_env):
    zones = ["us-east1-d", "us-east5-b", "us-east4-a", "europe-west4-a"]
    plans = {"us-east1-d": ["ACCEPTED", "WAITING_FOR_RESOURCES", EXPIRED],
             "us-east5-b": [("FAILED", 8, "There is no more capacity in the zone us-east5-b")],
             "europe-west4-a": ["ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]}
    quota = {"us-east4-a": ("http", 429, "Quota limit 'TPUV6EPreemptiblePodPerProjectPerZoneForTPUAPI' has been "
                                         "exceeded. Limit: 0 in zone us-east4-a.")}
    flaky = {"get_queued": [503], "get_node": [502, "reset", 500], "list_queued": [504], "delete_queued": [500]}
    with FakeTpuApi(quota, queue_plans=plans, flaky=flaky) as api:
        state = smoke(tmp_path, tpu_for(api, zones, provisioning="queued", queue_wait_s=600))
        assert state.is_completed(), state.message
        assert api.leftovers() == [] and all(not faults for faults in api.flaky.values())
        assert api.creates("queuedResources") == zones and api.creates() == []
    report = artifact()
    assert "**provisioning**: queued, up to 600 s per zone" in report and "| delete | ok |" in report
    for row in ("| us-east1-d | queue_expired |", "| us-east5-b | capacity |", "| us-east4-a | quota_zero |",
                "| europe-west4-a | created |"):
        assert row in report
    messages = logged(state)
    assert [line.split(":")[0] for line in zone_lines(messages)] == [f"zone {z}" for z in zones]
    assert len([m for m in messages if "transient error" in m]) == 6


def test_direct_smoke_after_a_stuck_create_and_a_create_that_left_a_node(prefect_harness, tmp_path, gcp_env):
    zones = ["us-east1-d", "us-central1-b", "europe-west4-a"]
    errors = {"us-east1-d": ("stuck",), "us-central1-b": ("leaves_node", 500, "Internal error encountered.")}
    with FakeTpuApi(errors, flaky={"get_operation": [503], "delete_node": [502]}) as api:
        state = smoke(tmp_path, tpu_for(api, zones, create_timeout_s=0.3))
        assert state.is_completed(), state.message
        assert api.leftovers() == []
        deleted = [p.split("/")[3] for p in api.deletes()]
        assert {"us-east1-d", "us-central1-b", "europe-west4-a"} <= set(deleted)
    report = artifact()
    for row in ("| us-east1-d | timeout |", "| us-central1-b | transient |", "| europe-west4-a | created |"):
        assert row in report
    assert len(zone_lines(logged(state))) == 3


def test_cancellation_hook_deletes_nodes_and_queues_in_every_zone_despite_5xx(prefect_harness, gcp_env):
    from prefect.client.schemas.objects import FlowRun

    from tpu.teardown import delete_run_nodes

    run_id = uuid.uuid4()
    name = node_name(str(run_id))
    labels = {**OWNER_LABELS, RUN_LABEL: name}
    with FakeTpuApi(flaky={"delete_node": [503, 503], "list_node": ["reset"]}) as api:
        api.add_node("us-east1-d", name, labels, state="CREATING")
        api.add_node("europe-west4-a", name, labels)
        api.add_node("europe-west4-a", "another-run", {**OWNER_LABELS, RUN_LABEL: "grpo-smoke-other"})
        tpu = tpu_for(api, ["us-east1-d", "europe-west4-a"])
        flow_run = FlowRun(id=run_id, name="cancelled-run", flow_id=uuid.uuid4(),
                           parameters={"provider": "gcp", "tpu": tpu.model_dump()})
        delete_run_nodes(types.SimpleNamespace(name="tpu-smoke"), flow_run, None)
        assert api.leftovers() == ["projects/p/locations/europe-west4-a/nodes/another-run"]
        assert sorted(api.faults_served, key=str) == sorted([("delete_node", 503)] * 2 + [("list_node", "reset")], key=str)


def test_reaper_finds_vms_and_queues_in_zones_outside_its_own(prefect_harness, tmp_path, gcp_env):
    from flows.provision import provision_flow
    from flows.reap import reap_flow

    with FakeTpuApi(queue_plans={"asia-northeast1-b": ["WAITING_FOR_RESOURCES", "ACTIVE"]}) as api:
        made = provision_flow(provider="gcp", tpu=tpu_for(api, ["asia-northeast1-b"], provisioning="queued"))
        assert made["zone"] == "asia-northeast1-b" and len(api.leftovers()) == 2
        reaper = tpu_for(api, ["europe-west4-a"])
        expected = [f"queued resource {made['name']}@asia-northeast1-b", f"node {made['name']}@asia-northeast1-b"]
        assert reap_flow(provider="gcp", tpu=reaper, ttl_hours=1e-9, dry_run=True) == expected
        assert len(api.leftovers()) == 2 and api.deletes() == []
        assert "asia-northeast1-b" in artifact("tpu-reaper") and "dry run" in artifact("tpu-reaper")
        assert reap_flow(provider="gcp", tpu=reaper, ttl_hours=1e-9) == expected
        assert api.leftovers() == []


def test_provision_whose_vm_never_gets_ready_deletes_it(prefect_harness, gcp_env):
    from flows.provision import provision_flow

    with FakeTpuApi(preempt_after_gets=0) as api:
        state = provision_flow(provider="gcp", tpu=tpu_for(api, ["europe-west4-a"]), return_state=True)
        assert state.is_failed() and "PREEMPTED, not READY" in state.message
        assert api.leftovers() == [] and len(api.deletes()) == 1
    assert "| delete | ok |" in artifact("tpu-provision-v6e-8") and "| europe-west4-a | created |" in artifact("tpu-provision-v6e-8")


def test_deployment_parameters_with_queued_provisioning_validate_against_the_flow_schema():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    from flows.smoke import smoke_flow

    schema = parameter_schema(smoke_flow.fn).model_dump_for_openapi()
    fields = schema["definitions"]["TpuRequest"]["properties"]
    assert fields["provisioning"]["enum"] == ["direct", "queued"]
    assert all(fields[k]["description"] for k in ("provisioning", "queue_wait_s", "create_timeout_s", "poll_s"))
    validate({"tpu": {"provisioning": "queued", "queue_wait_s": 1800, "zones": ["europe-west4-a"]}}, schema,
             raise_on_error=True)
    with pytest.raises(ValidationError, match="tpu.provisioning"):
        validate({"tpu": {"provisioning": "sometimes"}}, schema, raise_on_error=True)


def test_deployed_tpu_parameters_are_valid_requests():
    import yaml

    deployments = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    requests = [TpuRequest.model_validate(d["parameters"]["tpu"]) for d in deployments if "tpu" in d["parameters"]]
    assert len(requests) == 3 and {r.provisioning for r in requests} == {"direct"}
    assert all(r.queue_wait_s == 900 and r.create_timeout_s == 1800 and len(r.zones) == 10 for r in requests)
