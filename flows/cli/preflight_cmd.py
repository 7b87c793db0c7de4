"""`grpo preflight`: per-device memory estimate; exit 0 when it fits, 3 when it does not."""
import argparse
import sys


def preflight(args: argparse.Namespace) -> int:
    from flows.preflight import format_report, run_preflight
    from schemas import load_run_config

    cfg = load_run_config(args.config, args.overrides)
    report = run_preflight(cfg, args.tpu or args.gpu)
    print(format_report(report))
    if report.fits:
        return 0
    phase, component = report.culprit
    print(f"error: the config does not fit on {report.accelerator.name}: {phase} {component} is the largest "
          "part; apply one of the changes above or use a larger slice", file=sys.stderr)
    return 3


def register(subparsers) -> None:
    from flows.cli.main import add_config_arguments

    parser = subparsers.add_parser("preflight", help="estimate per-device memory; exit 3 when the config will not fit")
    add_config_arguments(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    # Names are checked by grpo_core.memory.get_accelerator in the handler, so that
    # building the parser does not import jax.
    target.add_argument("--tpu", metavar="SLICE", help="TPU slice, e.g. v6e-8, v6e-16, v5litepod-8, v5p-8, v4-8")
    target.add_argument("--gpu", metavar="GPU", help="GPU: h100, h100-8, h200, h200-8")
    parser.set_defaults(handler=preflight)
