"""Rollout on a TPU slice per weights layout: a roofline from the compiled program (predictions).

For a config, a slice and a layout (rollout.weights_layout: fsdp, replicated, tp) the run's
rollout sampler is compiled for the slice on this CPU host (libtpu's compile-only client,
as `grpo preflight --compile` does) and its optimized HLO is read (grpo_core.hlo): per
decode step (one iteration of the decode while loop, the layer scan inside it multiplied
by its trip count; not cost_analysis, which counts loop bodies once) the bytes each chip
moves over ICI and the dot FLOPs; the prefill is the rest of the program. HBM bytes per
decode step are counted from the shapes: the weights each chip's matmuls read (all of
them unless tp splits them) plus its whole KV cache buffer (the decode attention reads
every slot, masked). Predicted times divide by the published per-chip rates and take the
largest of the three (perfect overlap); a rollout is the prefill plus max_new_tokens decode
steps (every row running to the limit).

    python -m benchmarks.tpu_roofline run [--config FILE ...] [--slices v6e-8,v5e-8,v6e-16]
        [--layouts fsdp,replicated,tp] [--jsonl FILE]     one child process per cell
    python -m benchmarks.tpu_roofline report [--jsonl FILE] [--hlo-dir DIR]  the markdown table
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from benchmarks.tpu_calibration import run_child

CONFIGS = ("configs/grpo_gsm8k_qwen25_3b_bs128_steps100.yaml", "configs/grpo_gsm8k_qwen25_7b_bs128_steps100.yaml")
LAYOUTS = ("fsdp", "replicated", "tp")
DEFAULT_JSONL = Path(__file__).parent / "results" / "tpu_roofline.jsonl"
# Per chip, from Google's pages (cloud.google.com/tpu/docs/v6e, /v5e): bf16 peak, HBM
# bandwidth, and ICI bandwidth. The pages give ICI as bidirectional per chip (v6e 800 GBps,
# v5e 400 GBps); what one chip can receive is half of that, the rate used here.
RATES = {
    "v6e": {"flops": 918e12, "hbm": 1638e9, "ici": 400e9},
    "v5e": {"flops": 197e12, "hbm": 819e9, "ici": 200e9},
}
# MLLM-JAX's published run (Qwen2.5-3B, 128 sequences per step, v6e-8): measured, not ours.
MLLM_JAX = {"rollout_s": 9.5, "step_s": "12.1-12.9"}


def measure(config: str, slice_name: str, layout: str, hlo_dir: str = "") -> dict:
    """Compile one cell's rollout and read its per-step costs (runs in the child process)."""
    import jax.numpy as jnp

    from flows.compile_check import require_libtpu, slice_devices, use_compile_only_tpu
    from flows.preflight import resolve_model_config
    from grpo_core import aot
    from grpo_core.layouts import generation_mesh
    from grpo_core.memory import get_accelerator
    from grpo_core.models.model import Model
    from grpo_core.sampling import lower_generate
    from grpo_core.sharding import make_mesh
    from schemas import load_run_config
    from tasks.device_groups import mesh_shape
    from tasks.session import make_trainer

    require_libtpu()
    use_compile_only_tpu()
    cfg = load_run_config(config, [f"rollout.weights_layout={layout}"])
    acc, r = get_accelerator(slice_name), cfg.rollout
    mesh = make_mesh(mesh_shape(cfg, acc.hosts, acc.chips // acc.hosts), slice_devices(acc))
    m, derived, dtype = resolve_model_config(cfg.model.name_or_path), cfg.derive(acc.hosts, acc.chips), jnp.dtype(cfg.model.dtype)
    gen = generation_mesh(mesh, layout, m, acc.chips // acc.hosts)
    train_params = aot.abstract_params(m, dtype, mesh)
    resident = aot.resident_bytes(make_trainer(cfg, m, mesh, derived.grad_accum_steps).abstract_opt_state(train_params))
    resident += aot.resident_bytes(train_params) if gen is not mesh else 0
    started = time.perf_counter()
    compiled = lower_generate(Model(m, aot.abstract_params(m, dtype, gen)), derived.prompts_global_per_step,
                              r.max_prompt_tokens, gen, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                              top_p=r.top_p, top_k=r.top_k, n=r.n).compile()
    seconds = time.perf_counter() - started
    text = compiled.as_text()
    if hlo_dir:  # the optimized module, to read the collectives by hand
        Path(hlo_dir).mkdir(parents=True, exist_ok=True)
        _hlo_path(hlo_dir, config, slice_name, layout).write_text(text)
    memory = aot.ProgramMemory.of(compiled, resident)
    return {"config": config, "slice": slice_name, "layout": layout, "compile_seconds": round(seconds, 1),
            **rollout_fields(cfg, m, gen, derived.prompts_global_per_step, dtype, text),
            "xla_bytes": memory.total, "xla": vars(memory)}


def rollout_fields(cfg, m, gen, prompts: int, dtype, text: str) -> dict:
    """What the roofline of a compiled rollout program needs: its sampler mesh, the bytes a
    chip reads per decode step (weights, KV cache) and the program's per-step ICI bytes and
    FLOPs (from its optimized HLO `text`)."""
    from grpo_core.sampling import prompt_slots, sampler_rows
    from grpo_core.sharding import batch_shards

    r = cfg.rollout
    tp, itemsize = gen.shape["tp"], dtype.itemsize
    rows = sampler_rows(prompts, gen) // batch_shards(gen) * r.n
    slots = prompt_slots(r.max_prompt_tokens) + r.max_new_tokens
    kv_heads = m.num_key_value_heads // math.gcd(m.num_key_value_heads, tp)
    return {
        "model": cfg.model.name_or_path, "generation_mesh": dict(gen.shape),
        "weight_bytes": m.num_params * itemsize,
        "weights_read_per_device": _weights_per_device(m, tp, itemsize),
        "kv_cache_per_device": 2 * m.num_hidden_layers * rows * slots * kv_heads * m.head_dim * itemsize,
        "rows_per_device": rows, "max_new_tokens": r.max_new_tokens, **hlo_fields(text),
    }


def hlo_fields(text: str) -> dict:
    """Per decode step and for the prefill (the rest of the program): ICI bytes and FLOPs per chip."""
    from grpo_core import hlo

    decode, program = hlo.decode_loop_cost(text), hlo.loop_cost(text, "ENTRY")  # program: prefill + one step
    return {"decode_collective_bytes": decode.collective_bytes, "decode_collective_ops": decode.collective_ops,
            "decode_flops": decode.flops,
            "prefill_collective_bytes": program.total_collective_bytes - decode.total_collective_bytes,
            "prefill_flops": program.flops - decode.flops}


def _hlo_path(hlo_dir, config: str, slice_name: str, layout: str) -> Path:
    return Path(hlo_dir) / f"{Path(config).stem}.{slice_name}.{layout}.hlo.txt"


def _weights_per_device(m, tp: int, itemsize: int) -> int:
    """Bytes of weights one chip's matmuls read per decode step: all of them, or their tp share."""
    from grpo_core.memory import Workload, param_bytes_per_device

    w = Workload(model=m, param_bytes=itemsize, prompts=1, group_size=1, max_prompt_tokens=1, new_tokens=1,
                 micro_batch=1, remat=False, optimizer="lion", mesh=(("dp", 1), ("fsdp", 1), ("tp", tp)))
    return param_bytes_per_device(w, itemsize)


def predict(row: dict) -> dict:
    """Per decode step and per rollout: seconds bound by HBM, FLOPs and ICI, from the published rates."""
    rate = RATES[row["slice"].split("-")[0].replace("v5litepod", "v5e")]
    ici = sum(row["decode_collective_bytes"].values())
    hbm = row["weights_read_per_device"] + row["kv_cache_per_device"]
    bounds = {"hbm": hbm / rate["hbm"], "flops": row["decode_flops"] / rate["flops"], "ici": ici / rate["ici"]}
    step = max(bounds.values())
    prefill = max(row["weights_read_per_device"] / rate["hbm"], row["prefill_flops"] / rate["flops"],
                  row["prefill_collective_bytes"] / rate["ici"])
    return {"ici_bytes_per_step": ici, "ici_share_of_weights": ici / row["weight_bytes"], "hbm_bytes_per_step": hbm,
            "step_ms": 1e3 * step, "bound": max(bounds, key=bounds.get), "prefill_s": prefill,
            "rollout_s": prefill + row["max_new_tokens"] * step, "fits": row["xla_bytes"] <= _capacity(row["slice"])}


def _capacity(slice_name: str) -> int:
    from grpo_core.memory import get_accelerator

    return get_accelerator(slice_name).capacity_bytes


def run(configs, slices, layouts, jsonl: Path, hlo_dir: str = "") -> None:
    """Compile the cells not yet in `jsonl`, one child process each (a fresh libtpu keeps host memory flat)."""
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["config"], r["slice"], r["layout"]) for r in _read(jsonl)}
    for cell in ((c, s, l) for s in slices for c in configs for l in layouts):
        if cell in done:
            continue
        rows = run_child("benchmarks.tpu_roofline", [*cell, hlo_dir], jsonl)
        if rows is None:
            continue
        row = rows[0]
        p = predict(row)
        print(f"{' '.join(cell)}: ICI {p['ici_bytes_per_step'] / 1e9:.3f} GB/step ({p['ici_share_of_weights']:.1%} of "
              f"weights), step {p['step_ms']:.2f} ms ({p['bound']}), rollout {p['rollout_s']:.2f} s, "
              f"compile {row['compile_seconds']} s", flush=True)


def _read(jsonl: Path) -> list[dict]:
    lines = jsonl.read_text().splitlines() if jsonl.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def report(jsonl: Path, hlo_dir: str = "") -> None:
    """The table; with `hlo_dir`, the HLO figures are read again from the kept programs."""
    gib = 1024**3
    print("| model | slice | layout | sampler mesh dp/fsdp/tp | ICI GB / decode step (% of weights) | HBM GB / step | "
          "GFLOP / step | predicted step ms (bound) | predicted rollout s | XLA rollout GiB (+ resident) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = _read(jsonl)
    for row in rows:
        kept = _hlo_path(hlo_dir, row["config"], row["slice"], row["layout"]) if hlo_dir else None
        if kept is not None and kept.is_file():
            row.update(hlo_fields(kept.read_text()))
        p, g = predict(row), row["generation_mesh"]
        print(f"| {row['model'].split('/')[-1]} | {row['slice']} | {row['layout']} | {g['dp']}/{g['fsdp']}/{g['tp']} | "
              f"{p['ici_bytes_per_step'] / 1e9:.3f} ({p['ici_share_of_weights']:.1%}) | {p['hbm_bytes_per_step'] / 1e9:.2f} | "
              f"{row['decode_flops'] / 1e9:.1f} | {p['step_ms']:.2f} ({p['bound']}) | {p['rollout_s']:.2f} | "
              f"{row['xla_bytes'] / gib:.2f}{'' if p['fits'] else ' (does not fit)'} |")
    print(f"\nMLLM-JAX (measured, Qwen2.5-3B, 128 sequences, v6e-8): rollout {MLLM_JAX['rollout_s']} s, "
          f"step {MLLM_JAX['step_s']} s.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "report", "child"))
    parser.add_argument("cell", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--config", action="append", help="run config (repeatable; default: the shipped bs128 ones)")
    parser.add_argument("--slices", default="v6e-8,v5e-8,v6e-16")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--jsonl", type=Path, default=DEFAULT_JSONL)
    parser.add_argument("--hlo-dir", default="", help="run: also keep each program's optimized HLO text here; "
                                                      "report: read the HLO figures again from there")
    args = parser.parse_args(argv)
    if args.mode == "child":
        print(json.dumps(measure(*args.cell)))
    elif args.mode == "run":
        run(args.config or CONFIGS, args.slices.split(","), args.layouts.split(","), args.jsonl, args.hlo_dir)
    else:
        report(args.jsonl, args.hlo_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
