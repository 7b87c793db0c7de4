"""`grpo` command line: one argparse parser, one small module per command group.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`handler=fn(args) -> int`. Modules are imported when the parser is built; each keeps its
heavy imports (jax, prefect) inside the handler so `grpo --help` and `grpo print-config`
stay fast. User errors (`UserError`) print one line and exit with their code (2 for bad
input, 3 for "will not fit"); anything else keeps its traceback.
"""
import argparse
import importlib
import sys

from grpo_core.errors import UserError

COMMAND_MODULES = (
    "flows.cli.config_cmd",
    "flows.cli.models_cmd",
    "flows.cli.train_cmd",
    "flows.cli.preflight_cmd",
    "flows.cli.smoke_cmd",
    "flows.cli.export_cmd",
    "flows.cli.eval_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grpo", description="GRPO post-training of LLMs in JAX, orchestrated by Prefect.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--config FILE and repeatable --set dotted.key=value, shared by every command that reads a config."""
    parser.add_argument("--config", required=required, metavar="FILE", help="YAML run config")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field, e.g. --set rollout.n=8 (repeatable)",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
