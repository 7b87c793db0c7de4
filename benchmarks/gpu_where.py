"""Where the GPU time goes: top kernels of one decode call and one update step, each named
by the HLO instruction it runs (shape and op), for the notes in benchmarks/RESULTS.md.

Same model and shapes as benchmarks/gpu_suite.py (Qwen2.5-1.5B-shaped, bf16, random).

    python -m benchmarks.gpu_where [--sequences 256] [--update-micro-batches 2]
"""
from __future__ import annotations

import argparse
import os
import re

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.gpu_suite import build_model  # noqa: E402
from benchmarks.op_profile import format_ops, top_ops  # noqa: E402
from grpo_core.models.config import PRESETS  # noqa: E402
from grpo_core.sampling import generate  # noqa: E402
from grpo_core.sharding import make_mesh  # noqa: E402
from grpo_core.train_step import Trainer  # noqa: E402


def describe(profile: dict, hlo_text: str, width: int = 160) -> str:
    """The profile with each op's HLO definition line (kernel names use '_' where HLO has '.')."""
    defs = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (.*)", line)
        if m:
            defs[m.group(1).replace(".", "_").replace("-", "_")] = m.group(2)
    lines = [format_ops(profile)]
    for op in profile["ops"]:
        d = defs.get(op["name"].replace(".", "_").replace("-", "_"))
        if d:
            lines.append(f"    {op['name']}: {d[:width]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-1.5b")
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--update-batch", type=int, default=8)
    parser.add_argument("--update-seq", type=int, default=1024)
    parser.add_argument("--update-micro-batches", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = PRESETS[args.model]
    mesh = make_mesh({"fsdp": 1}, jax.devices()[:1])
    model = build_model(cfg, mesh)
    prompts = np.random.default_rng(0).integers(10, cfg.vocab_size - 10, (args.sequences, 128)).tolist()
    call = lambda: generate(model, prompts, args.new_tokens, temperature=0.0, stop_at_eos=False)  # noqa: E731
    profile = top_ops(call, reps=2, top=12)
    from grpo_core import sampling

    hlo = "\n".join(c.as_text() for c in _compiled_generate(sampling, model, prompts, args.new_tokens))
    print(f"decode {args.sequences} seqs x {args.new_tokens} tokens:\n" + describe(profile, hlo), flush=True)
    del model

    from benchmarks.update_flops import make_batch

    trainer = Trainer(cfg, optax.adamw(1e-6), mesh=mesh, micro_batches=args.update_micro_batches)
    state = {"params": build_model(cfg, mesh).params}
    state["opt"] = trainer.init_opt_state(state["params"])
    data = trainer.shard_batch(make_batch(cfg, args.update_batch, args.update_seq))

    def step():
        state["params"], state["opt"], metrics = trainer.step(state["params"], state["opt"], data)
        jax.block_until_ready((state["params"], metrics))

    step()
    from benchmarks.gpu_suite import best_seconds, matmul_flops
    from benchmarks.update_flops import model_flops

    seconds = best_seconds(step, 3)
    achieved = model_flops(cfg, args.update_batch, args.update_seq) / seconds
    profile = top_ops(step, reps=2, top=12)
    print(f"update {args.update_batch}x{args.update_seq}, {args.update_micro_batches} micro-batches: "
          f"{seconds:.3f} s, {achieved / 1e12:.0f} TFLOP/s = {100 * achieved / matmul_flops():.0f}% of the bf16 matmul\n"
          + format_ops(profile), flush=True)


def _compiled_generate(sampling, model, prompts, new_tokens):
    """The optimized HLO of the generate call above (same shapes, so the same fusion names)."""
    rows = sampling.bucket(len(prompts))
    width = sampling.prompt_slots(max(len(p) for p in prompts))
    tokens, mask = sampling._left_pad(prompts, rows, width, model.pad_token_id)
    spec = sampling.SamplingSpec(max_new_tokens=new_tokens, temperature=0.0, stop_at_eos=False,
                                 eos_ids=tuple(model.eos_token_ids), pad_id=model.pad_token_id,
                                 unroll_layers=sampling._unroll_layers(model.mesh))
    lowered = sampling._generate_jit.lower(model.params, tokens, mask, np.uint32(0), cfg=model.config, spec=spec,
                                           mesh=model.mesh)
    yield lowered.compile()


if __name__ == "__main__":
    main()
