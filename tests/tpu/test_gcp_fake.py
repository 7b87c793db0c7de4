"""The gcp provider's own client code against a loopback fake of the Cloud TPU REST API."""

import pytest

from fake_tpu_api import HISTORICAL_ZONES, FakeTpuApi, historical_zone_errors  # noqa: E402

from tpu.gcp import GcpProvider, make_client
from tpu.provider import NodeSpec, ProvisionError

SPEC = NodeSpec("smoke-abc", "v6e-8", "v6e-ubuntu-2404", HISTORICAL_ZONES, True, {"grpo-flows": "smoke"})


def provider(api: FakeTpuApi) -> GcpProvider:
    return GcpProvider("p", make_client(api.endpoint, anonymous=True), poll_s=0.01)


def test_historical_sequence_creates_in_europe_west4_a_and_deletes_there():
    with FakeTpuApi(historical_zone_errors()) as api:
        gcp = provider(api)
        made = gcp.create(SPEC)
        node = made.node
        assert node.zone == "europe-west4-a" and node.state == "READY"
        assert [a.zone for a in made.attempts] == list(HISTORICAL_ZONES) and made.attempts[-1].outcome == "created"
        assert api.creates() == list(HISTORICAL_ZONES)
        body = next(b for m, _, b in api.requests if m == "POST" and "europe-west4-a" in _)
        assert body["acceleratorType"] == "v6e-8" and body["runtimeVersion"] == "v6e-ubuntu-2404"
        assert body["schedulingConfig"]["spot"] is True and body["labels"] == {"grpo-flows": "smoke"}
        assert gcp.wait_ready(node, 5).state == "READY"
        assert gcp.delete(node.name, node.zone) is True
        assert api.deletes() == ["projects/p/locations/europe-west4-a/nodes/smoke-abc"]
        assert gcp.delete(node.name, node.zone) is False


def test_failures_are_classified_per_zone():
    with FakeTpuApi(historical_zone_errors()) as api:
        with pytest.raises(ProvisionError) as err:
            provider(api).create(NodeSpec("x", zones=HISTORICAL_ZONES[:9]))
    reasons = [attempt.outcome for attempt in err.value.attempts]
    assert reasons == ["capacity"] * 3 + ["quota_zero"] * 3 + ["reservation_not_found"] * 3
    assert "no zone could create v6e-8" in str(err.value)


def test_permission_error_stops_at_the_first_zone():
    errors = {"us-east1-d": ("http", 403, "Permission 'tpu.nodes.create' denied on 'projects/p'.")}
    with FakeTpuApi(errors) as api:
        with pytest.raises(ProvisionError) as err:
            provider(api).create(SPEC)
        assert api.creates() == ["us-east1-d"]
    assert err.value.attempts[-1].outcome == "permission" and "stopped" in str(err.value)


def test_region_scoped_quota_skips_the_regions_other_zones():
    zones = ("us-east5-b", "us-east5-c", "us-east5-a", "europe-west4-a")
    errors = {"us-east5-b": ("http", 429, "Quota limit 'TPUV6EPreemptiblePodPerProjectPerRegionForTPUAPI' "
                                          "has been exceeded. Limit: 0 in region us-east5.")}
    with FakeTpuApi(errors) as api:
        made = provider(api).create(NodeSpec("x", zones=zones))
        assert api.creates() == ["us-east5-b", "europe-west4-a"] and made.node.zone == "europe-west4-a"
        assert [a.outcome for a in made.attempts] == ["quota_zero", "skipped_region", "skipped_region", "created"]


def test_preempted_node_is_seen_and_listed_by_label():
    with FakeTpuApi(preempt_after_gets=1, workers=4) as api:
        gcp = provider(api)
        node = gcp.create(NodeSpec("x", zones=("europe-west4-a",), labels={"grpo-flows": "smoke"})).node
        assert node.workers == 4
        assert gcp.get("x", "europe-west4-a").state == "READY"
        assert gcp.get("x", "europe-west4-a").state == "PREEMPTED"
        with pytest.raises(ProvisionError, match="PREEMPTED"):
            gcp.wait_ready(node, 5)
        assert [n.name for n in gcp.list({"grpo-flows": "smoke"}, ("europe-west4-a", "us-east1-d"))] == ["x"]
        assert gcp.list({"grpo-flows": "other"}, ("europe-west4-a",)) == []
