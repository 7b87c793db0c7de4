"""Create-error and job-outcome classification."""
import pytest
from google.api_core import exceptions

from tpu.errors import NEXT_ZONE, SKIP_REGION, STOP, classify_create_error, classify_exception, classify_job, region_of


def test_create_errors_pick_the_next_zone_or_stop():
    cases = [
        (8, "There is no more capacity in the zone \"us-east1-d\"", NEXT_ZONE, "capacity"),
        (429, "Quota limit 'X' has been exceeded. Limit: 0 in zone us-east4-a.", NEXT_ZONE, "quota_zero"),
        (429, "Quota limit 'X' has been exceeded. Limit: 0 in region us-east5.", SKIP_REGION, "quota_zero"),
        (404, "Reservation not found: projects/p/zones/z/reservations/r", NEXT_ZONE, "reservation_not_found"),
        (8, "Insufficient reserved capacity for v6e-8", NEXT_ZONE, "insufficient_reservation"),
        (403, "Permission 'tpu.nodes.create' denied", STOP, "permission"),
        (401, "Request had invalid authentication credentials.", STOP, "auth"),
        (400, "Invalid accelerator type v6e-9", STOP, "invalid_argument"),
        (503, "backend unavailable", NEXT_ZONE, "transient"),
        (None, "something odd", STOP, "unknown"),
    ]
    for code, message, action, reason in cases:
        decision = classify_create_error(code, message)
        assert (decision.action, decision.reason) == (action, reason), message


def test_api_core_exceptions_are_classified():
    assert classify_exception(exceptions.ResourceExhausted("There is no more capacity in the zone")).reason == "capacity"
    assert classify_exception(exceptions.TooManyRequests("Limit: 0 in zone z")).reason == "quota"
    assert classify_exception(exceptions.TooManyRequests("Quota limit q. Limit: 0 in zone z")).reason == "quota_zero"
    assert classify_exception(exceptions.NotFound("Reservation not found")).action == NEXT_ZONE
    assert classify_exception(exceptions.InvalidArgument("bad runtime")).action == STOP
    assert region_of("us-east5-b") == "us-east5" and region_of("europe-west4-a") == "europe-west4"


def test_job_outcomes():
    ok = {"exit_code": 0, "last_step": 3}
    assert classify_job(ok, 3).ok
    assert classify_job({"exit_code": 0, "last_step": 2}, 3).reason == "incomplete"
    assert classify_job({"exit_code": 0, "last_step": 1, "steps_done": 2}, 2).ok  # steps counted from 0
    oom = {"exit_code": 1, "last_step": 1, "oom_line": "RESOURCE_EXHAUSTED: Error allocating device buffer"}
    assert classify_job(oom, 3).reason == "oom" and "RESOURCE_EXHAUSTED" in classify_job(oom, 3).excerpt
    tb = {"exit_code": 1, "last_step": 0, "traceback": "Traceback (most recent call last):\nValueError: x"}
    assert classify_job(tb, 3).reason == "traceback"
    assert classify_job({"exit_code": 137, "last_step": 1}, 3).reason == "killed"
    assert classify_job({"exit_code": None, "last_step": 1}, 3).reason == "killed"
    assert classify_job({"exit_code": 2, "last_step": 0, "tail": "error: x"}, 3).reason == "failed"


def test_queued_resource_failures():
    from tpu.errors import classify_queue_failure

    expired = classify_queue_failure(4, "The queued resource request expired before it could be fulfilled.")
    assert (expired.action, expired.reason) == (NEXT_ZONE, "queue_expired")
    assert classify_queue_failure(8, "There is no more capacity in the zone").reason == "capacity"
    assert classify_queue_failure(7, "Permission 'tpu.nodes.create' denied").action == STOP
    assert (classify_queue_failure(None, "").action, classify_queue_failure(None, "").reason) == (NEXT_ZONE, "queue_failed")


def test_transient_errors_are_5xx_rate_limits_and_resets_only():
    import requests

    from tpu.errors import api_message
    from tpu.retry import is_transient

    for exc in (exceptions.InternalServerError("x"), exceptions.BadGateway("x"), exceptions.ServiceUnavailable("x"),
                exceptions.GatewayTimeout("x"), exceptions.TooManyRequests("Rate exceeded for read requests"),
                ConnectionResetError(), requests.exceptions.ConnectionError("Connection aborted.")):
        assert is_transient(exc), exc
    for exc in (exceptions.TooManyRequests("Quota limit 'q' has been exceeded. Limit: 0 in zone z."),
                exceptions.Forbidden("denied"), exceptions.NotFound("gone"), exceptions.BadRequest("bad"), ValueError()):
        assert not is_transient(exc), exc
    assert api_message(exceptions.NotFound("GET http://127.0.0.1:1/v2/projects/p/x?y=1: node x not found")) == "node x not found"


def test_backoff_doubles_with_jitter_up_to_the_cap_and_gives_up():
    from tpu.retry import RetryPolicy

    sleeps, log = [], []
    policy = RetryPolicy(attempts=4, initial_s=2, max_s=5, sleep=sleeps.append, rand=lambda: 0.999, log=log.append)
    assert [round(policy.delay(n), 2) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]
    assert RetryPolicy(rand=lambda: 0.0).delay(1) == 1.0
    calls = []

    def flaky():
        calls.append(1)
        raise exceptions.ServiceUnavailable("blip")

    with pytest.raises(exceptions.ServiceUnavailable):
        policy.call("get node x", flaky)
    assert len(calls) == 4 and len(sleeps) == 3 and len(log) == 3 and "retry 3/3" in log[-1]
    assert policy.call("get node x", lambda: "ok") == "ok"
