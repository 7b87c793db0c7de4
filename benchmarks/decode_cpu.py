"""Decode throughput on CPU: grpo_core.sampling.generate vs HF transformers' generate.

Same machine, same run, same weights (SmolLM2-135M-Instruct, float32, our converted HF
directory loaded by both), same chat prompts, greedy, a fixed number of new tokens (EOS
does not stop either side, so both produce exactly prompts x new_tokens tokens). Our
first call includes XLA compilation; it is reported separately and excluded from the
throughput, which is the best of `--repeats` timed calls for each side. Timed calls
alternate between the two sides, so load from other processes hits both alike.

The goal is a fraction of the weight-streaming floor: with few rows a decode step reads
every weight the step uses once, so no implementation makes more tokens per second than
rows / (weight bytes / memory rate). The rate is measured in the same run by a jitted
[rows, D] x [D, N] float32 matmul whose weight has the decode's byte count (best of
`--repeats`); HF generate's figure is reported next to it as the peer's.

    python benchmarks/decode_cpu.py [--model-dir DIR] [--prompts 8] [--new-tokens 64]

Writes decode_cpu.json into a new results folder under ~/.cache/grpo-flows/benchmarks (or
`--out FILE`) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.report import DECODE_FLOOR_GOAL, run_dir
from flows.cli.main import positive_int

QUESTIONS = [
    "What is the capital of France?",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about the sea.",
    "A train travels 60 km in 45 minutes. What is its average speed in km/h?",
    "List three uses of copper.",
    "Why do cats purr?",
    "Translate 'good morning' into Spanish and German.",
    "Give me a tip for learning to play the guitar faster, with an example exercise.",
]


def chat_prompts(tokenizer, count: int) -> list[list[int]]:
    """`count` chat-formatted prompts (token ids) of different lengths."""
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in questions]
    return [tokenizer(t)["input_ids"] for t in texts]


def streamed_bytes(params: dict) -> int:
    """Bytes a decode step reads: every leaf but the embedding table, which a step only
    gathers rows of, unless it doubles as the (tied) LM head."""
    import jax

    leaves = {k: v for k, v in params.items() if not (k == "embed" and "lm_head" in params)}
    return int(sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(leaves)))


def streaming_floor(weight_bytes: int, rows: int, width: int, repeats: int) -> dict:
    """Tokens/s of `rows` rows when a step costs one read of `weight_bytes` at the rate a jitted
    [rows, width] x [width, N] float32 matmul of that many weight bytes reaches here."""
    import jax
    import jax.numpy as jnp

    columns = max(weight_bytes // (4 * width), 1)
    weight = jnp.ones((width, columns), jnp.float32)
    x = jnp.ones((rows, width), jnp.float32)
    matmul = jax.jit(lambda a, w: a @ w)
    matmul(x, weight).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(x, weight).block_until_ready()
        best = min(best, time.perf_counter() - start)
    bytes_per_s = 4 * width * columns / best
    return {"weight_bytes": weight_bytes, "bytes_per_s": bytes_per_s,
            "floor_tokens_per_s": rows * bytes_per_s / weight_bytes}


def ours_caller(model_dir: Path, prompts, new_tokens: int):
    """(call() -> completions, first-call seconds incl. XLA compilation, streamed bytes, width D)."""
    from grpo_core.models.loading import load_pretrained
    from grpo_core.sampling import generate

    model = load_pretrained(model_dir, dtype="float32")

    def call():
        result = generate(model, prompts, new_tokens, temperature=0.0, stop_at_eos=False)
        return [list(map(int, t)) for t in result.tokens]

    start = time.perf_counter()
    call()
    return call, time.perf_counter() - start, streamed_bytes(model.params), model.config.hidden_size


def hf_caller(model_dir: Path, prompts, new_tokens: int, pad_id: int):
    """(call() -> completions, torch threads); left-padded batch like ours."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    # eos_token_id=None: like ours with stop_at_eos=False, every row produces exactly new_tokens tokens.
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=pad_id)

    def call():
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:].tolist()

    call()  # warm-up (allocator, lazy init)
    return call, torch.get_num_threads()


def time_alternating(calls: dict, repeats: int) -> dict:
    """{name: (best seconds, completions)}; calls alternate so load spikes hit both sides alike."""
    times = {name: [] for name in calls}
    outputs = {}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            outputs[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: (min(times[name]), outputs[name]) for name in calls}


def _until_eos(tokens: list[int], eos_ids) -> list[int]:
    return next((tokens[: i + 1] for i, t in enumerate(tokens) if t in eos_ids), tokens)


def summarize(ours: dict, hf: dict, prompts, new_tokens: int, eos_ids, floor: dict) -> dict:
    total = len(prompts) * new_tokens
    assert all(len(t) == new_tokens for t in ours["tokens"] + hf["tokens"]), "both sides must emit new_tokens tokens"
    same = sum(a == b for a, b in zip(ours["tokens"], hf["tokens"]))
    same_answer = sum(_until_eos(a, eos_ids) == _until_eos(b, eos_ids) for a, b in zip(ours["tokens"], hf["tokens"]))
    # Past EOS the model babbles with near-tied logits, so float32 rounding can split there.
    first_diff = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), new_tokens)
                  for a, b in zip(ours["tokens"], hf["tokens"])]
    return {
        "ours_tokens_per_s": total / ours["seconds"], "hf_tokens_per_s": total / hf["seconds"],
        "speedup": hf["seconds"] / ours["seconds"], "ours_seconds": ours["seconds"], "hf_seconds": hf["seconds"],
        "ours_compile_seconds": ours["compile_seconds"], "ours_first_call_seconds": ours["first_call_seconds"],
        "identical_completions": f"{same}/{len(prompts)}", "identical_until_eos": f"{same_answer}/{len(prompts)}",
        "first_divergence_per_prompt": first_diff,
        "total_new_tokens": total, "torch_threads": hf["torch_threads"],
        "streaming_floor": floor,
        "fraction_of_streaming_floor": total / ours["seconds"] / floor["floor_tokens_per_s"],
    }


def environment() -> dict:
    import jax
    import torch
    import transformers

    # Other processes on a small shared machine skew both sides differently: record the load.
    return {"machine": platform.machine(), "cpu_count": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
            "jax": jax.__version__,
            "jax_devices": len(jax.devices()), "torch": torch.__version__, "transformers": transformers.__version__}


def print_table(report: dict) -> None:
    s = report["summary"]
    print(f"\nSmolLM2-135M-Instruct decode, CPU float32, {report['prompts']} prompts x {report['new_tokens']} new tokens, greedy")
    print(f"{'':28}{'tokens/s':>10}{'seconds':>10}")
    print(f"{'grpo_core.sampling':28}{s['ours_tokens_per_s']:>10.1f}{s['ours_seconds']:>10.2f}")
    print(f"{'transformers generate':28}{s['hf_tokens_per_s']:>10.1f}{s['hf_seconds']:>10.2f}")
    print(f"{100 * s['fraction_of_streaming_floor']:.1f}% of the weight-streaming floor "
          f"({s['streaming_floor']['floor_tokens_per_s']:.1f} tokens/s at "
          f"{s['streaming_floor']['bytes_per_s'] / 1e9:.1f} GB/s; goal >= {100 * DECODE_FLOOR_GOAL:.0f}%)")
    print(f"speedup vs HF generate {s['speedup']:.2f}x; our compile {s['ours_compile_seconds']:.1f} s (excluded); "
          f"identical completions {s['identical_completions']} ({s['identical_until_eos']} up to the first EOS)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="HF-format SmolLM2 dir (default: `grpo models pull` cache)")
    parser.add_argument("--prompts", type=positive_int, default=8)
    parser.add_argument("--new-tokens", type=positive_int, default=64)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--out", default=None, help="JSON result file")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        from tasks.models import pull_model

        model_dir = pull_model("smollm2-135m-instruct")
    else:
        model_dir = Path(args.model_dir)
    from grpo_core.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    prompts = chat_prompts(tokenizer, args.prompts)
    ours_call, first_call, weight_bytes, width = ours_caller(model_dir, prompts, args.new_tokens)
    hf_call, threads = hf_caller(model_dir, prompts, args.new_tokens, tokenizer.pad_token_id)
    timed = time_alternating({"ours": ours_call, "hf": hf_call}, args.repeats)
    ours = {"seconds": timed["ours"][0], "tokens": timed["ours"][1], "first_call_seconds": first_call,
            "compile_seconds": max(first_call - timed["ours"][0], 0.0)}
    hf = {"seconds": timed["hf"][0], "tokens": timed["hf"][1], "torch_threads": threads}
    floor = streaming_floor(weight_bytes, len(prompts), width, max(args.repeats, 3))
    report = {"benchmark": "decode_cpu", "model": "smollm2-135m-instruct", "dtype": "float32",
              "prompts": args.prompts, "new_tokens": args.new_tokens, "repeats": args.repeats,
              "prompt_lengths": [len(p) for p in prompts], "environment": environment(),
              "summary": summarize(ours, hf, prompts, args.new_tokens, {tokenizer.eos_token_id}, floor)}
    out = Path(args.out) if args.out else run_dir() / "decode_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
