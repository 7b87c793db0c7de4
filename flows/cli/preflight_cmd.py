"""`grpo preflight`: will the config fit? Exit 0 when it fits, 3 when it does not.

Without --compile the answer is the analytic estimate (grpo_core.memory, calibrated
against XLA). With --compile it is XLA's own: the run's programs compiled for the TPU
slice on this host (flows/compile_check.py; needs libtpu, the `tpu` extra).

With mesh.sampler_devices both answers are per device group: the samplers (rollout, eval)
on the sampler's chips, the update on the trainer's. For rollout.max_staleness=1 configs
the report ends with the best split for the slice (flows.preflight.best_split).
"""
import argparse
import json
import sys
from pathlib import Path


def preflight(args: argparse.Namespace) -> int:
    from flows import compile_check
    from flows.preflight import format_report, run_preflight
    from grpo_core.errors import UserError, writable_dir
    from schemas import load_run_config

    cfg = load_run_config(args.config, args.overrides)
    phases = compile_check.parse_phases(args.phases)
    if args.compile and not args.tpu:
        raise UserError("--compile compiles for a TPU slice; name it with --tpu (e.g. --tpu v6e-8)")
    if args.phases and not args.compile:
        raise UserError("--phases chooses what --compile compiles; add --compile or drop --phases")
    report = run_preflight(cfg, args.tpu or args.gpu)  # a split the slice cannot hold is refused first
    if args.compile:
        compile_check.require_libtpu()
    print(format_report(report))
    compiled = None
    if args.compile:
        log = lambda message: print(message, file=sys.stderr, flush=True)
        cache = None if args.no_cache else writable_dir(args.cache_dir or compile_check.default_cache_dir(),
                                                         "--cache-dir")
        compiled = compile_check.compile_config(cfg, report.accelerator, phases, cache, log)
        print(compile_check.format_compiled(report, compiled))
    summary = compile_check.summary(report, compiled)
    if args.json:
        _write_json(Path(args.json), summary)
    if compiled is not None:
        return _xla_verdict(report, compiled)
    if report.fits:
        return 0
    phase, component = report.culprit
    print(f"error: the config does not fit on {report.accelerator.name}: {phase} {component} is the largest "
          "part; apply one of the changes above or use a larger slice", file=sys.stderr)
    return 3


def _xla_verdict(report, compiled: dict) -> int:
    from flows.compile_check import does_not_fit, failed

    name = report.accelerator.name
    for result in failed(compiled):
        message = "\n".join(result.error.strip().splitlines()[:12])
        print(f"error: XLA could not compile the {result.phase} program for {name} (a bug found before renting):\n"
              f"{message}", file=sys.stderr)
        return 1
    over = does_not_fit(compiled, report.capacity_bytes)
    if not over:
        peak = max(compiled.values(), key=lambda r: r.xla_bytes)
        print(f"FITS per XLA: peak {peak.xla_bytes / 1024**3:.2f} GiB in {peak.phase} of "
              f"{report.capacity_bytes / 1024**3:.2f} GiB per device")
        return 0
    for phase in over:
        result = compiled[phase]
        why = (result.error.strip().splitlines()[0][:400] if result.oom
               else f"needs {result.xla_bytes / 1024**3:.2f} GiB of {report.capacity_bytes / 1024**3:.2f} GiB")
        print(f"error: per XLA, {phase} does not fit on {name}: {why}", file=sys.stderr)
    return 3


def _write_json(path: Path, summary: dict) -> None:
    from grpo_core.artifacts import atomic_write_bytes
    from grpo_core.errors import UserError

    try:
        atomic_write_bytes(path, (json.dumps(summary, indent=1) + "\n").encode())
    except OSError as exc:
        raise UserError(f"--json {path}: cannot write it ({exc.strerror}); name a writable file") from None


def register(subparsers) -> None:
    from flows.cli.main import add_config_arguments

    parser = subparsers.add_parser("preflight", help="will the config fit? exit 3 when it will not (--compile: ask XLA)")
    add_config_arguments(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    # Names are checked by grpo_core.memory.get_accelerator in the handler, so that
    # building the parser does not import jax.
    target.add_argument("--tpu", metavar="SLICE", help="TPU slice, e.g. v6e-8, v6e-16, v5e-8, v5p-8, v4-8")
    target.add_argument("--gpu", metavar="GPU", help="GPU: h100, h100-8, h200, h200-8")
    parser.add_argument("--compile", action="store_true",
                        help="compile the run's programs for the TPU slice with XLA on this host (needs libtpu: "
                             "pip install -e '.[tpu]'); the verdict is then XLA's")
    parser.add_argument("--phases", metavar="LIST", help="with --compile: rollout,update,eval (default: all "
                                                         "the run executes)")
    parser.add_argument("--json", metavar="PATH", help="also write the verdict and per-phase bytes as JSON")
    parser.add_argument("--cache-dir", metavar="DIR", help="where XLA's answers are kept per program "
                                                           "(default ~/.cache/grpo-flows/xla-tpu)")
    parser.add_argument("--no-cache", action="store_true", help="compile again even for known programs")
    parser.set_defaults(handler=preflight)
