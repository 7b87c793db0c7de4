"""Trying zones in order until one gives us a node.

Each zone ends in one log line (what happened there and how long it took) and one
ZoneAttempt for the report, also when a later zone succeeds. A zone that failed is cleared
before the next is tried: a create can fail and still leave a node behind (a 500 answered
after the node was made, a create that never finished), and a node we gave up on must not
keep billing while the run goes on elsewhere.
"""
from __future__ import annotations

import time
from typing import Callable

from tpu.errors import NEXT_ZONE, SKIP_REGION, Decision, classify_exception, region_of
from tpu.provider import Node, NodeSpec, Provisioned, ProvisionError, ZoneAttempt
from tpu.retry import is_transient


class ZoneFailed(Exception):
    """A zone attempt ended in a classified failure (raised by a provider's attempt)."""

    def __init__(self, decision: Decision):
        super().__init__(f"{decision.reason}: {decision.message}")
        self.decision = decision


def _decide(exc: Exception) -> Decision | None:
    """The decision for a failed attempt, or None when the error is not the zone's fault."""
    from google.api_core import exceptions

    if isinstance(exc, ZoneFailed):
        return exc.decision
    if isinstance(exc, TimeoutError):
        return Decision(NEXT_ZONE, "timeout", str(exc))
    if isinstance(exc, exceptions.GoogleAPIError):
        return classify_exception(exc)
    if is_transient(exc):
        return Decision(NEXT_ZONE, "transient", str(exc))
    return None


def _clear(clear: Callable[[str], None], zone: str, log: Callable[[str], None]) -> None:
    try:
        clear(zone)
    except Exception as exc:  # noqa: BLE001 - teardown deletes by label later; go on with the next zone
        log(f"zone {zone}: could not delete what the failed attempt left ({exc}); teardown will retry")


def try_zones(spec: NodeSpec, attempt: Callable[[str], Node], clear: Callable[[str], None],
              log: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> Provisioned:
    """attempt(zone) in each zone of spec.zones until one returns a node; clear(zone) after each
    failure. A region-wide quota of 0 skips that region's other zones; a non-retryable
    error (permission, invalid argument) stops at once."""
    attempts: list[ZoneAttempt] = []
    skipped: set[str] = set()

    def record(item: ZoneAttempt, then: str) -> None:
        attempts.append(item)
        log(f"{item.line()}; {then}")

    for zone in spec.zones:
        if region_of(zone) in skipped:
            record(ZoneAttempt(zone, "skipped_region", f"quota 0 in region {region_of(zone)}"), "not tried")
            continue
        start = clock()
        try:
            node = attempt(zone)
        except Exception as exc:  # noqa: BLE001 - classified below; anything else is re-raised
            decision = _decide(exc)
            if decision is None:
                raise
        else:
            record(ZoneAttempt(zone, "created", f"{node.name} ({spec.provisioning})", clock() - start), "using it")
            return Provisioned(node, tuple(attempts))
        _clear(clear, zone, log)
        detail = (decision.message.strip().splitlines() or [""])[0][:300]
        stop = decision.action not in (NEXT_ZONE, SKIP_REGION)
        record(ZoneAttempt(zone, decision.reason, detail, clock() - start), "stopping" if stop else "trying the next zone")
        if stop:
            raise ProvisionError(f"create in {zone} stopped: {decision.reason}: {decision.message}", attempts)
        if decision.action == SKIP_REGION:
            skipped.add(region_of(zone))
    tried = ", ".join(f"{a.zone} ({a.outcome})" for a in attempts)
    raise ProvisionError(f"no zone could create {spec.accelerator_type}; tried {tried}", attempts)
