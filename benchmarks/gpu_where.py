"""Where the GPU time goes: top kernels of one decode call and one update step, each named
by the HLO instruction it runs (shape and op), for the notes in benchmarks/RESULTS.md.

Same model and shapes as benchmarks/gpu_suite.py (Qwen2.5-1.5B-shaped, bf16, random).

    python -m benchmarks.gpu_where [--sequences 256] [--update-micro-batches 2]
    XLA_FLAGS=--xla_gpu_enable_command_buffer= python -m benchmarks.gpu_where --update-only --out u.json

With XLA's command buffers (CUDA graphs) on, the trace shows graph launches rather than the
kernels inside them; turning them off (the flag above) lists every kernel on the GPU's own
timeline, split by kind (matmul / reduction / copy / other fusion) against the step's wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import re

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from flows.cli.main import positive_int  # noqa: E402
from benchmarks.gpu_suite import best_seconds, build_model, matmul_flops, update_step  # noqa: E402
from benchmarks.op_profile import format_ops, summarize, top_ops, trace_events  # noqa: E402
from benchmarks.update_flops import model_flops  # noqa: E402
from grpo_core.models.config import PRESETS  # noqa: E402
from grpo_core.sampling import _generate_jit, generate, generate_inputs  # noqa: E402
from grpo_core.sharding import make_mesh  # noqa: E402


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
    parser.add_argument("--sequences", type=positive_int, default=256)
    parser.add_argument("--new-tokens", type=positive_int, default=64)
    parser.add_argument("--update-batch", type=positive_int, default=8)
    parser.add_argument("--update-seq", type=positive_int, default=1024)
    parser.add_argument("--update-micro-batches", type=positive_int, default=2)
    parser.add_argument("--update-only", action="store_true", help="skip the decode profile")
    parser.add_argument("--out", help="also write the update's kernel profile here as JSON")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.model]
    mesh = make_mesh({"fsdp": 1}, jax.devices()[:1])
    if not args.update_only:
        profile_decode(cfg, mesh, args)
    profile_update(cfg, mesh, args)


def profile_decode(cfg, mesh, args) -> None:
    model = build_model(cfg, mesh)
    prompts = np.random.default_rng(0).integers(10, cfg.vocab_size - 10, (args.sequences, 128)).tolist()
    call = lambda: generate(model, prompts, args.new_tokens, temperature=0.0, stop_at_eos=False)  # noqa: E731
    profile = top_ops(call, reps=2, top=12)
    # The optimized HLO of that call (same inputs, so the same fusion names as in the trace).
    tokens, mask, spec, mesh = generate_inputs(model, prompts, args.new_tokens, temperature=0.0, stop_at_eos=False)
    hlo = _generate_jit.lower(model.params, tokens, mask, np.uint32(0), cfg=cfg, spec=spec, mesh=mesh).compile()
    print(f"decode {args.sequences} seqs x {args.new_tokens} tokens:\n" + describe(profile, hlo.as_text()), flush=True)


def profile_update(cfg, mesh, args) -> None:
    step = update_step(cfg, mesh, args.update_batch, args.update_seq, args.update_micro_batches)
    seconds = best_seconds(step, 3)
    flops = model_flops(cfg, args.update_batch, args.update_seq)
    achieved = flops / seconds
    peak = matmul_flops()
    print(f"update {args.update_batch}x{args.update_seq}, {args.update_micro_batches} micro-batches: "
          f"{seconds:.3f} s, {achieved / 1e12:.0f} TFLOP/s = {100 * achieved / peak:.0f}% of the bf16 matmul "
          f"({peak / 1e12:.0f} TFLOP/s)", flush=True)
    events = trace_events(step, reps=2)
    profile = summarize(events, reps=2, top=25, device_only=True)
    if not profile["ops"]:  # no device timeline in the trace: say what was there instead
        names = sorted({str(e.get("args", {}).get("name")) for e in events if e.get("name") == "process_name"})
        print(f"no kernels on a device timeline; trace processes: {names}")
        profile = summarize(events, reps=2, top=25)
    busy = profile["total_ms_per_call"] / 1e3
    matmul_s = profile.get("classes", {}).get("matmul", 0.0) / 1e3
    summary = {"device": jax.devices()[0].device_kind, "step_seconds": seconds, "model_tflops": flops / 1e12,
               "mfu_vs_matmul": achieved / peak, "matmul_peak_tflops_per_s": peak / 1e12,
               "kernel_busy_seconds": busy, "idle_fraction": max(0.0, 1 - busy / seconds),
               "matmul_kernel_seconds": matmul_s,
               "matmul_kernels_tflops_per_s": flops / matmul_s / 1e12 if matmul_s else None,
               "xla_flags": os.environ.get("XLA_FLAGS", ""), "profile": profile}
    print(format_ops(profile))
    print(json.dumps({k: v for k, v in summary.items() if k != "profile"}, indent=1), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
