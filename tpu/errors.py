"""Classification of Cloud TPU API errors (which zone to try next) and of job outcomes.

Create errors come either as the create operation's error (a stockout is code 8, "There is
no more capacity in the zone ...") or as the HTTP error of the create request itself (a
quota of 0 is HTTP 429 "Quota limit ... Limit: 0 in region/zone ...", an unknown
reservation is HTTP 404). Messages are matched first because the same status code means
"try elsewhere" for a stockout and "stop" for a malformed request.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

NEXT_ZONE, SKIP_REGION, STOP = "next_zone", "skip_region", "stop"

# (reason, pattern, action): checked in order on the error message.
_MESSAGE_RULES = (
    ("quota_zero", re.compile(r"quota limit.*limit: 0\b.*\bin region\b", re.I | re.S), SKIP_REGION),
    ("quota_zero", re.compile(r"quota limit.*limit: 0\b", re.I | re.S), NEXT_ZONE),
    ("capacity", re.compile(r"no more capacity|stockout|out of capacity|insufficient capacity", re.I), NEXT_ZONE),
    ("reservation_not_found", re.compile(r"reservation .*not found|reservation not found", re.I), NEXT_ZONE),
    ("insufficient_reservation", re.compile(r"insufficient reserved capacity|reservation .*insufficient", re.I), NEXT_ZONE),
    ("permission", re.compile(r"permission|forbidden|not authorized|denied", re.I), STOP),
    ("auth", re.compile(r"unauthenticated|credentials|invalid authentication", re.I), STOP),
)

# Status code (gRPC or HTTP) -> (reason, action) when no message rule matched.
_CODE_RULES = {
    3: ("invalid_argument", STOP), 400: ("invalid_argument", STOP),
    7: ("permission", STOP), 403: ("permission", STOP),
    16: ("auth", STOP), 401: ("auth", STOP),
    8: ("quota", NEXT_ZONE), 429: ("quota", NEXT_ZONE),
    14: ("transient", NEXT_ZONE), 503: ("transient", NEXT_ZONE),
    4: ("transient", NEXT_ZONE), 504: ("transient", NEXT_ZONE),
    13: ("transient", NEXT_ZONE), 500: ("transient", NEXT_ZONE),
}


@dataclass(frozen=True)
class Decision:
    """What to do after a failed create: next_zone, skip_region (its other zones) or stop."""

    action: str
    reason: str
    message: str


def classify_create_error(code: int | None, message: str) -> Decision:
    """Classify one failed create attempt from its status code and message."""
    for reason, pattern, action in _MESSAGE_RULES:
        if pattern.search(message):
            return Decision(action, reason, message)
    reason, action = _CODE_RULES.get(code, ("unknown", STOP))
    return Decision(action, reason, message)


def api_message(exc: BaseException) -> str:
    """The error's message without the "POST https://...: " that REST errors start with."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return re.sub(r"^[A-Z]+ https?://\S+: ", "", str(message))


def classify_exception(exc: BaseException) -> Decision:
    """Classify a google.api_core exception (HTTP code in .code, message in .message)."""
    code = getattr(exc, "code", None)
    code = code if isinstance(code, int) else None
    return classify_create_error(code, api_message(exc))


# How Cloud TPU words a queued resource whose valid-until time passed unfulfilled.
_QUEUE_EXPIRED = re.compile(r"expired|valid.until|allocation interval|could not be (fulfilled|satisfied)", re.I)


def classify_queue_failure(code: int | None, message: str) -> Decision:
    """Classify a queued resource that went FAILED: expiry and unrecognised failures move on
    to the next zone (the queue of this zone did not deliver); a classified stop still stops."""
    if _QUEUE_EXPIRED.search(message):
        return Decision(NEXT_ZONE, "queue_expired", message)
    decision = classify_create_error(code, message)
    if decision.reason == "unknown":
        return Decision(NEXT_ZONE, "queue_failed", message or "queued resource FAILED without a message")
    return decision


def region_of(zone: str) -> str:
    """'us-east5-b' -> 'us-east5'."""
    return zone.rsplit("-", 1)[0]


# The phase watchdog's sentence (tasks/watchdog.py: hang_sentence), in a log line of its own.
_HANG = re.compile(r"step (\d+) hung in its (\w+) phase\b.*")


@dataclass(frozen=True)
class JobOutcome:
    """Why a smoke job ended: ok, hang, oom, traceback, killed, failed, timeout, incomplete, preempted, not_joined."""

    reason: str
    message: str
    excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


def classify_job(status: dict, expected_steps: int) -> JobOutcome:
    """Classify one worker's final monitor status (see tpu.scripts.MONITOR_PY for the keys)."""
    code, step = status.get("exit_code"), status.get("last_step") or 0
    hang = _HANG.search(status.get("tail") or "")
    if hang:  # the watchdog ended the job: nothing after it is a cause
        return JobOutcome("hang", f"step {hang.group(1)} hung in its {hang.group(2)} phase (exit code {code})",
                          hang.group(0))
    if status.get("oom_line"):
        return JobOutcome("oom", f"out of device memory (exit code {code}) after step {step}", status["oom_line"])
    if status.get("traceback"):
        return JobOutcome("traceback", f"training raised (exit code {code}) after step {step}", status["traceback"])
    if code is None:
        return JobOutcome("killed", f"job died without an exit code after step {step}", status.get("tail", ""))
    if code in (137, 143) or code < 0:
        return JobOutcome("killed", f"job was killed (exit code {code}) after step {step}", status.get("tail", ""))
    if code != 0:
        return JobOutcome("failed", f"job exited with code {code} after step {step}", status.get("tail", ""))
    done = status.get("steps_done", step)
    if done < expected_steps:
        return JobOutcome("incomplete", f"job exited 0 but finished {done} of {expected_steps} steps", status.get("tail", ""))
    return JobOutcome("ok", f"{done} steps, exit code 0")
