"""Capacity the way Cloud TPU users get it, against the loopback fake of the REST API:
queued resources, transient API errors on every call kind, stuck and node-leaving creates,
teardown by label. Every scenario ends with nothing left in the fake.

Sleeps (retry backoff, polls) go to a fake clock, so a 15-minute queue passes in milliseconds."""

import pytest
from google.api_core import exceptions

from fake_tpu_api import FakeTpuApi  # noqa: E402

from tpu.gcp import GcpProvider, make_client
from tpu.provider import NODE, QUEUED_RESOURCE, NodeSpec, ProvisionError
from tpu.retry import RetryPolicy
from tpu.teardown import delete_labelled

LABELS = {"grpo-flows": "tpu-vm", "grpo-run": "run-1"}
EXPIRED = ("FAILED", 4, "The queued resource request expired before it could be fulfilled.")


class FakeClock:
    """time.monotonic and time.sleep in one: sleeping moves the clock."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def provider(api: FakeTpuApi, clock: FakeClock, log: list, attempts: int = 7) -> GcpProvider:
    retry = RetryPolicy(attempts=attempts, sleep=clock.sleep, log=log.append)
    return GcpProvider("p", make_client(api.endpoint, anonymous=True), poll_s=10, retry=retry, log=log.append, clock=clock)


def spec(zones, provisioning="direct", **kw) -> NodeSpec:
    return NodeSpec("run-1", zones=tuple(zones), labels=LABELS, provisioning=provisioning, **kw)


def finish(gcp: GcpProvider, api: FakeTpuApi, zones) -> list[str]:
    """Teardown as the flows do it; then nothing may be left."""
    deleted = delete_labelled(gcp, {"grpo-run": "run-1"}, tuple(zones))
    assert api.leftovers() == []
    return deleted


def test_queued_resource_accepted_waiting_active_is_used_then_deleted_with_its_node():
    plan = ["ACCEPTED", "WAITING_FOR_RESOURCES", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]
    clock, log = FakeClock(), []
    with FakeTpuApi(queue_plans={"europe-west4-a": plan}) as api:
        gcp = provider(api, clock, log)
        made = gcp.create(spec(["europe-west4-a"], "queued", queue_wait_s=600))
        assert made.node.name == "run-1" and made.node.state == "READY" and api.creates() == []
        body = next(b for m, p, b in api.requests if m == "POST" and p.endswith("/queuedResources"))
        assert body["queueingPolicy"] == {"validUntilDuration": "600s"} and body["spot"] == {}
        assert body["tpu"]["nodeSpec"][0]["node"]["labels"] == LABELS
        assert gcp.wait_ready(made.node, 60).state == "READY"
        kinds = sorted(r.kind for r in gcp.list({"grpo-run": "run-1"}, ("europe-west4-a",)))
        assert kinds == [NODE, QUEUED_RESOURCE]
        # the fake refuses to delete a queued resource that has a node unless force=true
        assert finish(gcp, api, ["europe-west4-a"]) == ["queued resource run-1@europe-west4-a", "node run-1@europe-west4-a"]
    states = [line.split(": ")[1] for line in log if line.startswith("queued resource run-1 in europe-west4-a: ")]
    assert states == ["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]
    assert made.attempts[-1].outcome == "created" and made.attempts[-1].seconds == pytest.approx(30.0)


def test_queue_that_expires_or_fails_is_deleted_and_the_next_zone_is_queued():
    plans = {"us-east1-d": ["ACCEPTED", "WAITING_FOR_RESOURCES", EXPIRED],
             "us-east5-b": ["WAITING_FOR_RESOURCES", ("FAILED", 8, "There is no more capacity in the zone")],
             "us-west1-c": ["WAITING_FOR_RESOURCES"],  # never served: our own deadline ends it
             "europe-west4-a": ["ACCEPTED", "ACTIVE"]}
    clock, log = FakeClock(), []
    with FakeTpuApi(queue_plans=plans) as api:
        gcp = provider(api, clock, log)
        made = gcp.create(spec(plans, "queued", queue_wait_s=900, create_timeout_s=300))
        assert [(a.zone, a.outcome) for a in made.attempts] == [
            ("us-east1-d", "queue_expired"), ("us-east5-b", "capacity"), ("us-west1-c", "queue_expired"),
            ("europe-west4-a", "created")]
        assert made.attempts[2].seconds >= 1200 and "still WAITING_FOR_RESOURCES after 1200 s" in made.attempts[2].detail
        assert api.leftovers() == ["projects/p/locations/europe-west4-a/nodes/run-1",
                                   "projects/p/locations/europe-west4-a/queuedResources/run-1"]
        finish(gcp, api, plans)
    zone_lines = [line for line in log if line.startswith("zone ")]
    assert len(zone_lines) == 4 and "zone us-east1-d: queue_expired after" in zone_lines[0]
    assert zone_lines[0].endswith("trying the next zone") and zone_lines[-1].endswith("using it")


def test_failed_queue_with_a_permission_error_stops_and_leaves_nothing():
    plans = {"us-east1-d": [("FAILED", 7, "Permission 'tpu.nodes.create' denied")], "europe-west4-a": ["ACTIVE"]}
    with FakeTpuApi(queue_plans=plans) as api:
        gcp = provider(api, FakeClock(), [])
        with pytest.raises(ProvisionError, match="stopped: permission"):
            gcp.create(spec(plans, "queued"))
        assert api.creates("queuedResources") == ["us-east1-d"] and api.leftovers() == []


FAULTS = {"get_node": [503, "reset"], "list_node": [500], "delete_node": [502], "get_operation": [504, 429],
          "get_queued": [503], "list_queued": ["reset"], "delete_queued": [500]}


def test_transient_errors_on_every_read_poll_and_delete_are_retried_logged_and_bounded():
    clock, log = FakeClock(), []
    with FakeTpuApi(flaky=FAULTS, op_polls=1, queue_plans={"zone-b": ["ACCEPTED", "ACTIVE"]}) as api:
        gcp = provider(api, clock, log)
        direct = gcp.create(spec(["zone-a"])).node
        assert gcp.wait_ready(direct, 60).state == "READY"
        queued = gcp.create(NodeSpec("run-1q", zones=("zone-b",), labels=LABELS, provisioning="queued")).node
        assert queued.zone == "zone-b"
        assert sorted(finish(gcp, api, ["zone-a", "zone-b"])) == [
            "node run-1@zone-a", "node run-1q@zone-b", "queued resource run-1q@zone-b"]
        assert sorted(map(str, api.faults_served)) == sorted(str((k, f)) for k, faults in FAULTS.items() for f in faults)
    retries = [line for line in log if "transient error" in line]
    assert len(retries) == sum(len(f) for f in FAULTS.values())
    assert any("Connection aborted" in line for line in retries)
    # 2 s doubling (at most 2 faults in a row here), times a factor in [0.5, 1); polls sleep 10 s
    backoff = [s for s in clock.sleeps if s != 10]
    assert len(backoff) == len(retries) and all(1.0 <= s < 4.0 for s in backoff)


def test_non_retryable_and_exhausted_errors_are_raised():
    clock, log = FakeClock(), []
    with FakeTpuApi(flaky={"get_node": [403], "list_node": [503] * 5}) as api:
        api.add_node("zone-a", "run-1", LABELS)
        gcp = provider(api, clock, log, attempts=3)
        with pytest.raises(exceptions.Forbidden):
            gcp.get("run-1", "zone-a")
        assert log == []
        with pytest.raises(exceptions.ServiceUnavailable):
            gcp.list(LABELS, ("zone-a",))
        assert len([m for m, p, _ in api.requests if m == "GET" and p.endswith("/nodes")]) == 3
        assert len(log) == 2 and 1.0 <= clock.sleeps[0] < 2.0 <= clock.sleeps[1] < 4.0
        api.flaky.clear()
        finish(gcp, api, ["zone-a"])


def test_create_that_errors_after_making_the_node_and_a_5xx_create_move_on_and_leave_nothing():
    zones = ["us-east1-d", "us-central1-b", "europe-west4-a"]
    errors = {"us-east1-d": ("leaves_node", 500, "Internal error encountered."),
              "us-central1-b": ("http", 503, "The service is currently unavailable.")}
    with FakeTpuApi(errors) as api:
        gcp = provider(api, FakeClock(), [])
        made = gcp.create(spec(zones))
        assert [a.outcome for a in made.attempts] == ["transient", "transient", "created"]
        assert api.creates() == zones  # a create is never repeated in the same zone
        assert api.leftovers() == ["projects/p/locations/europe-west4-a/nodes/run-1"]
        assert "projects/p/locations/us-east1-d/nodes/run-1" in api.deletes()
        finish(gcp, api, zones)


def test_a_5xx_on_a_queued_resource_create_moves_on_to_the_next_zone():
    with FakeTpuApi(flaky={"create_queued": [503]}) as api:
        gcp = provider(api, FakeClock(), [])
        made = gcp.create(spec(["zone-a", "zone-b"], "queued"))
        assert [(a.zone, a.outcome) for a in made.attempts] == [("zone-a", "transient"), ("zone-b", "created")]
        assert api.creates("queuedResources") == ["zone-a", "zone-b"]
        finish(gcp, api, ["zone-a", "zone-b"])


def test_stuck_create_is_a_timeout_its_node_is_deleted_and_the_next_zone_is_tried():
    clock, log = FakeClock(), []
    with FakeTpuApi({"us-east1-d": ("stuck",)}) as api:
        gcp = provider(api, clock, log)
        made = gcp.create(spec(["us-east1-d", "europe-west4-a"], create_timeout_s=120))
        first = made.attempts[0]
        assert (first.outcome, made.node.zone) == ("timeout", "europe-west4-a")
        assert "did not finish within 120 s" in first.detail and 120 <= first.seconds < 140
        assert "projects/p/locations/us-east1-d/nodes/run-1" in api.deletes()
        assert any(line.startswith("zone us-east1-d: timeout after") for line in log)
        finish(gcp, api, ["us-east1-d", "europe-west4-a"])


def test_teardown_deletes_every_labelled_node_and_queue_in_every_zone_and_only_those():
    with FakeTpuApi(queue_plans={"zone-c": ["WAITING_FOR_RESOURCES"]}) as api:
        gcp = provider(api, FakeClock(), [])
        api.add_node("zone-a", "left-by-a-500", LABELS)
        api.add_node("zone-b", "run-1", LABELS)
        api.add_node("zone-b", "someone-else", {"grpo-run": "run-2"})
        gcp.client.create_queued_resource(parent="projects/p/locations/zone-c", queued_resource_id="run-1",
                                          queued_resource=_queued_message("zone-c"))
        deleted = delete_labelled(gcp, {"grpo-run": "run-1"}, ("zone-a", "zone-b", "zone-c"))
        assert sorted(deleted) == ["node left-by-a-500@zone-a", "node run-1@zone-b", "queued resource run-1@zone-c"]
        assert api.leftovers() == ["projects/p/locations/zone-b/nodes/someone-else"]


def test_listing_skips_a_zone_the_api_does_not_know_and_keeps_going():
    log = []
    with FakeTpuApi(flaky={"list_node": [400]}) as api:
        api.add_node("zone-b", "run-1", LABELS)
        gcp = provider(api, FakeClock(), log)
        assert finish(gcp, api, ["us-east1-z", "zone-b"]) == ["node run-1@zone-b"]
    assert log == ["cannot list zone us-east1-z (injected fault 400); skipped"]


def _queued_message(zone: str):
    import json

    from google.cloud import tpu_v2

    from tpu.gcp import queued_resource_body

    return tpu_v2.QueuedResource.from_json(json.dumps(queued_resource_body(spec([zone], "queued"), "p", zone)))
