"""`grpo` command line: one argparse parser, one small module per command group.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`handler=fn(args) -> int`. Modules are imported when the parser is built; each keeps its
heavy imports (jax, prefect) inside the handler so `grpo --help` and `grpo print-config`
stay fast. User errors (`UserError`) print one line and exit with their code (2 for bad
input, 3 for "will not fit"); anything else keeps its traceback. Every command gets
--quiet/--verbose and the one logging setup of `flows.console`.
"""
import argparse
import importlib
import os
import sys

from flows.console import NORMAL, QUIET, VERBOSE, setup_logging
from flows.local_server import quiet_analytics
from grpo_core.errors import UserError

COMMAND_MODULES = (
    "flows.cli.config_cmd",
    "flows.cli.models_cmd",
    "flows.cli.train_cmd",
    "flows.cli.preflight_cmd",
    "flows.cli.smoke_cmd",
    "flows.cli.status_cmd",
    "flows.cli.export_cmd",
    "flows.cli.eval_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grpo", description="GRPO post-training of LLMs in JAX, orchestrated by Prefect.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    _add_verbosity(parser)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """--quiet/--verbose on every leaf command (`grpo models pull ... --quiet` too)."""
    children = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in children:
        for child in dict.fromkeys(action.choices.values()):
            _add_verbosity(child)
    if children:
        return
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET, default=NORMAL,
                       help="show warnings and errors only (no live view)")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE,
                       help="also show debug lines and Prefect's task/flow state changes")


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
    """Run one command; as the program itself (argv from the command line), also leave the
    process at once when done (see `_leave`). Called with an argv list (tests), return."""
    quiet_analytics(os.environ)  # before anything imports Prefect, which shows its notice on import
    args = build_parser().parse_args(argv)
    setup_logging(args.verbosity)
    try:
        code = int(args.handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    if argv is None:
        _leave(code)
    return code


def _leave(code: int) -> None:
    """Run the exit handlers, flush and exit without the interpreter's own teardown.

    Freeing the modules of jax, prefect and their dependencies one by one takes seconds
    after a `grpo train` (the exit handlers themselves a fraction of one), which would be
    most of a finished run's rerun. Every file the commands write is closed by then; the
    exit handlers flush the logs and stop what Prefect and JAX started.
    """
    import atexit
    import os

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
