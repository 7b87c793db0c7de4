"""Deterministic fault injection for resume tests: GRPO_FAULT_INJECT="<phase>:<step>:<kind>".

kind: kill (SIGKILL this process, as a preemption would), raise (a Python traceback),
oom (print an XLA-style RESOURCE_EXHAUSTED line and exit 1), hang (block for ever, as a
device program that never finishes blocks its caller: the phase watchdog, tasks/watchdog.py,
ends the run). Fired inside the phase, after its compute and before its artifact is
written. Phase "checkpoint" fires in the background write of the checkpoint saved after
that step, once its files are written and before it commits (tasks/session.py); a hang
there blocks the next save or the run's final wait for it.
"""
import logging
import os
import signal
import sys
import time

ENV_VAR = "GRPO_FAULT_INJECT"
KINDS = ("kill", "raise", "oom", "hang")


def parse_fault(spec: str | None) -> tuple[str, int, str] | None:
    if not spec:
        return None
    try:
        phase, step, kind = spec.split(":")
        if kind not in KINDS:
            raise ValueError
        return phase, int(step), kind
    except ValueError:
        raise SystemExit(f"{ENV_VAR}={spec!r} is not <phase>:<step>:<kill|raise|oom|hang>") from None


def maybe_inject_fault(phase: str, step: int) -> None:
    fault = parse_fault(os.environ.get(ENV_VAR))
    if fault is None or fault[:2] != (phase, step):
        return
    kind = fault[2]
    sys.stdout.flush()
    sys.stderr.flush()
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "oom":
        print("RESOURCE_EXHAUSTED: Error allocating device buffer: Attempting to allocate 64.00M. "
              f"That was not possible. There are 41.14M free. (injected in {phase} of step {step})",
              file=sys.stderr, flush=True)
        os._exit(1)
    if kind == "hang":
        logging.getLogger("grpo_flows.faults").warning("injected hang in %s of step %d", phase, step)
        while True:  # the phase watchdog ends the process
            time.sleep(1)
    raise RuntimeError(f"injected fault in {phase} of step {step}")
