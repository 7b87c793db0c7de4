"""`grpo eval --model M [--model M2 ...] --config FILE [--samples k]`: models side by side.

Runs the `evaluate` flow (on Prefect's embedded server unless PREFECT_API_URL is set).
Every --model is resolved before Prefect starts, so a wrong name fails in a second.
"""
import argparse
import os
from pathlib import Path

from flows.local_server import quiet_analytics
from grpo_core.errors import writable_dir


def default_out_dir(config_path: str) -> Path:
    return Path("evals") / Path(config_path).stem


def evaluate(args: argparse.Namespace) -> int:
    quiet_analytics(os.environ)  # as in `grpo train`
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from schemas import load_run_config

    cfg = load_run_config(args.config, args.overrides)
    from tasks.eval_models import resolve_source
    from tasks.evaluate import held_out_items

    held_out_items(cfg)
    for ref in args.models:
        resolve_source(ref)
    out_dir = writable_dir(args.out or default_out_dir(args.config), "--out")
    from flows.evaluate import evaluate_flow

    evaluate_flow(models=args.models, config=cfg, samples=args.samples, out_dir=str(out_dir))
    print(f"wrote {out_dir / 'eval.json'}")
    return 0


def register(subparsers) -> None:
    from flows.cli.main import add_config_arguments

    parser = subparsers.add_parser("eval", help="score models side by side on the config's held-out problems")
    parser.add_argument("--model", dest="models", action="append", required=True, metavar="M",
                        help="run directory, HF-format directory or pullable model name (repeatable; the first "
                             "is the baseline the others are compared with)")
    add_config_arguments(parser)
    parser.add_argument("--samples", type=_non_negative_int, default=0, metavar="K",
                        help="also sample K completions per problem at rollout.temperature: pass@1, pass@K, mean@K")
    parser.add_argument("--out", metavar="DIR", help="eval directory (default: evals/<config name>)")
    parser.set_defaults(handler=evaluate)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative integer")
    return value
