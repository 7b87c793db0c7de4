"""Turning per-worker monitor statuses into one verdict (pure, so it is unit-tested)."""
from __future__ import annotations

from tpu.errors import JobOutcome, classify_job


def job_verdict(statuses: list[dict], expected_steps: int) -> JobOutcome | None:
    """None while every worker is still running; else the outcome.

    statuses: one parse_monitor() dict per worker, worker 0 first. Fails fast: the first
    worker that ended badly (or never launched) decides, while the others may still run.
    """
    if not all(s.get("launched") for s in statuses):
        missing = [i for i, s in enumerate(statuses) if not s.get("launched")]
        return JobOutcome("not_joined", f"workers {missing} never started the job")
    ended = [(i, s) for i, s in enumerate(statuses) if s.get("exit_code") is not None or not s.get("alive")]
    for worker, status in ended:
        outcome = classify_job(status, expected_steps if worker == 0 else 0)
        if not outcome.ok:
            return JobOutcome(outcome.reason, f"worker {worker}: {outcome.message}", outcome.excerpt)
    if len(ended) < len(statuses):
        return None
    return classify_job(statuses[0], expected_steps)
