"""grpo-flows performance harness: `python -m benchmarks run [--quick]` and the per-figure scripts."""
import argparse


def positive_int(text: str) -> int:
    """argparse type for counts (prompts, tokens, repeats, steps): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value
