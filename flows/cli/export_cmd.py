"""`grpo export RUN_DIR DEST [--step K] [--dtype ..] [--force] [--adapter]`: a run's checkpoint as an HF
model dir, or a LoRA run's adapters as a PEFT adapter dir."""
import argparse
import re
import shlex
import sys

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def shard_size(text: str) -> int:
    """'5GB', '500MB', '40KB' or a byte count -> bytes (decimal units, as transformers reads them)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 5GB, 500MB or 40KB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def export(args: argparse.Namespace) -> int:
    from flows.export import DEFAULT_MAX_SHARD_BYTES, export_run
    from grpo_core.errors import UserError

    if args.adapter and (args.dtype or args.max_shard_size):
        raise UserError("--dtype and --max-shard-size shape the merged model; a PEFT adapter directory is "
                        "written as float32 in one file: drop them, or drop --adapter for the merged export")
    command = shlex.join(["grpo", *sys.argv[1:]]) if sys.argv[1:2] == ["export"] else None
    result = export_run(args.run_dir, args.dest, step=args.step, dtype=args.dtype, force=args.force,
                        max_shard_bytes=args.max_shard_size or DEFAULT_MAX_SHARD_BYTES, command=command,
                        adapter=args.adapter)
    print(f"exported checkpoint {result.step} of {args.run_dir} ({result.dtype}, params sha256 "
          f"{result.params_sha256[:16]}) to {result.dest}: {', '.join(result.files)}")
    return 0


def register(subparsers) -> None:
    from flows.cli.main import positive_int

    parser = subparsers.add_parser("export", help="write a run's checkpoint as an HF-format model directory")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory of `grpo train` (may still be training)")
    parser.add_argument("dest", metavar="DEST", help="new (or empty) directory to write")
    parser.add_argument("--step", type=positive_int,
                        help="checkpoint after this many steps (default: the newest complete checkpoint)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), help="weights dtype (default: the run's model.dtype)")
    parser.add_argument("--force", action="store_true", help="replace DEST even if it is not empty")
    parser.add_argument("--max-shard-size", type=shard_size, metavar="SIZE",
                        help="split the weights into safetensors files of at most SIZE, with an index (default 5GB)")
    parser.add_argument("--adapter", action="store_true",
                        help="a LoRA run: write its adapters as a PEFT adapter directory instead of the merged model")
    parser.set_defaults(handler=export)
