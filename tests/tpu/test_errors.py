"""Create-error and job-outcome classification."""
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
