"""Deterministic fault injection for resume tests: GRPO_FAULT_INJECT="<phase>:<step>:<kind>".

kind: kill (SIGKILL this process, as a preemption would), raise (a Python traceback),
oom (print an XLA-style RESOURCE_EXHAUSTED line and exit 1). Fired inside the phase,
after its compute and before its artifact is written. Phase "checkpoint" fires in the
background write of the checkpoint saved after that step, once its files are written and
before it commits (tasks/session.py).
"""
import os
import signal
import sys

ENV_VAR = "GRPO_FAULT_INJECT"
KINDS = ("kill", "raise", "oom")


def parse_fault(spec: str | None) -> tuple[str, int, str] | None:
    if not spec:
        return None
    try:
        phase, step, kind = spec.split(":")
        if kind not in KINDS:
            raise ValueError
        return phase, int(step), kind
    except ValueError:
        raise SystemExit(f"{ENV_VAR}={spec!r} is not <phase>:<step>:<kill|raise|oom>") from None


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
    raise RuntimeError(f"injected fault in {phase} of step {step}")
