"""grpo-flows performance harness: `python -m benchmarks run [--quick]` and the per-figure scripts."""
