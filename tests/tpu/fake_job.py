"""Stand-in for `grpo train` in smoke tests: same arguments, same outputs, same fault injection.

Prints `step=N loss=... reward_mean=...` per step, writes metrics.jsonl and summary.json in
--run-dir, and honours GRPO_FAULT_INJECT="<phase>:<step>:<kind>" (raise | oom | kill | hang:
the phase blocks under the real phase watchdog, tasks/watchdog.py, timed by
--set logging.phase_timeout_s, which must then be importable from the synced repo).
"""
import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def fault(phase: str, step: int, args: argparse.Namespace) -> None:
    spec = os.environ.get("GRPO_FAULT_INJECT", "")
    if spec.count(":") != 2:
        return
    want_phase, want_step, kind = spec.split(":")
    if (want_phase, int(want_step)) != (phase, step):
        return
    if kind == "hang":
        hang(phase, step, args)
    if kind == "raise":
        raise RuntimeError(f"injected fault in {phase} at step {step}")
    if kind == "oom":
        print("jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Error allocating device buffer: "
              "Attempting to allocate 64.00M. That was not possible. There are 41.14M free.", flush=True)
        sys.exit(1)
    os.kill(os.getpid(), signal.SIGKILL)


def hang(phase: str, step: int, args: argparse.Namespace) -> None:
    from tasks.watchdog import PhaseWatchdog

    timeout_s = float(setting(args, "logging.phase_timeout_s", "1"))
    with PhaseWatchdog(timeout_s, Path(args.run_dir)).start().phase(step, phase):
        while True:
            time.sleep(0.05)


def setting(args: argparse.Namespace, key: str, default: str) -> str:
    return next((o.split("=", 1)[1] for o in args.overrides if o.startswith(f"{key}=")), default)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    steps = int(setting(args, "train.steps", "3"))
    delay = float(os.environ.get("FAKE_JOB_STEP_S", "0.05"))
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"config={args.config} wandb_key={'present' if os.environ.get('WANDB_API_KEY') else 'absent'}", flush=True)
    print(f"overrides={' '.join(args.overrides) or 'none'}", flush=True)
    with open(run_dir / "metrics.jsonl", "w") as metrics:
        for step in range(1, steps + 1):
            for phase in ("rollout", "reward", "advantage", "update"):
                fault(phase, step, args)
            time.sleep(delay)
            row = {"step": step, "loss": 0.5 / step, "reward_mean": 0.1 * step, "step_seconds": delay}
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            print(f"step={step} loss={row['loss']:.4f} reward_mean={row['reward_mean']:.3f}", flush=True)
    (run_dir / "summary.json").write_text(json.dumps({"steps": steps, "final_loss": 0.5 / steps}))


if __name__ == "__main__":
    main()
