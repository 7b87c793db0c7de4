"""The CPU sampler's dot emitter: XLA's own dots vs its YNNPACK fusions, same run.

`grpo_core.sampling` compiles sampler programs for CPU devices that decode at least
CPU_XLA_DOTS_MIN_ROWS rows per shard with `xla_cpu_experimental_ynn_fusion_type=""`
(CPU_SAMPLER_OPTIONS). This times one
`generate` call of SmolLM2-135M-Instruct (float32, chat prompts, greedy, exactly
`--new-tokens` tokens per row) with that program and with jax's default CPU compile of the
same function, in alternating rounds so a neighbour's load hits both alike; best of
`--repeats` each. Writes benchmarks/results/cpu_dots.json.

    python -m benchmarks.cpu_dots [--prompts 16] [--new-tokens 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial

import numpy as np

from benchmarks.report import write_result
from flows.cli.main import positive_int


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=positive_int, default=16)
    parser.add_argument("--new-tokens", type=positive_int, default=64)
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args(argv)

    from benchmarks.decode_cpu import chat_prompts, time_alternating
    from grpo_core.models.loading import load_pretrained, load_tokenizer
    from grpo_core.sampling import _generate_jit, _generate_jit_cpu, generate_inputs
    from tasks.models import pull_model

    model_dir = pull_model("smollm2-135m-instruct")
    model = load_pretrained(model_dir, dtype="float32")
    prompts = chat_prompts(load_tokenizer(model_dir), args.prompts)
    tokens, mask, spec, mesh = generate_inputs(model, prompts, args.new_tokens, temperature=0.0, stop_at_eos=False)
    programs = {"xla_dots": _generate_jit_cpu, "ynnpack_fusions": _generate_jit}

    def call(program):
        out = program(model.params, tokens, mask, np.uint32(0), cfg=model.config, spec=spec, mesh=mesh)
        return np.asarray(out[0])

    first = {}
    for name, program in programs.items():
        start = time.perf_counter()
        call(program)
        first[name] = time.perf_counter() - start
    timed = time_alternating({name: partial(call, program) for name, program in programs.items()}, args.repeats)
    best = {name: seconds for name, (seconds, _) in timed.items()}
    outputs = {name: out for name, (_, out) in timed.items()}
    rows = [f"| {name} | {best[name]:.2f} | {1000 * best[name] / args.new_tokens:.1f} | {first[name]:.1f} |"
            for name in programs]
    result = {"benchmark": "cpu_dots", "prompts": args.prompts, "new_tokens": args.new_tokens, "repeats": args.repeats,
              "best_seconds": best, "first_call_seconds": first,
              "speedup": best["ynnpack_fusions"] / best["xla_dots"],
              "same_tokens": bool(np.array_equal(outputs["xla_dots"], outputs["ynnpack_fusions"])),
              "load_average_1m": os.getloadavg()[0]}
    print(f"SmolLM2-135M generate, {args.prompts} prompts x {args.new_tokens} tokens, float32, best of {args.repeats}")
    print("| program | seconds | ms per token step | first call (compile) s |\n|---|---|---|---|")
    print("\n".join(rows))
    print(f"XLA dots / YNNPACK: {result['speedup']:.2f}x faster; same tokens: {result['same_tokens']}")
    write_result("cpu_dots", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
