"""Does the update share each GRPO group's prompt on a TPU slice? Read from the compiled program.

For a config on a slice (default: the shipped 3B and 7B bs128 configs on v6e-8) the run's
update is compiled for the slice twice with XLA (libtpu's compile-only client, on this
host): as the run builds it, and with prompt sharing off (`group_size=1`). XLA's cost
analysis counts each loop body once (one layer of one micro-batch, forward + backward,
plus the LM head), so the two FLOP counts compare the per-iteration work directly. The
step's FLOPs saved are then counted analytically: the prompt rows the sharing skips,
times the per-token layer FLOPs (forward + backward = 3x), times layers.

    python -m benchmarks.shared_prompt [--config FILE ...] [--slice v6e-8] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys

CONFIGS = ("configs/grpo_gsm8k_qwen25_3b_bs128_steps100.yaml", "configs/grpo_gsm8k_qwen25_7b_bs128_steps100.yaml")


def layer_flops_per_token(m, keys: int) -> float:
    """Forward matmul FLOPs of one decoder layer for one token attending to `keys` keys."""
    D, F, Hd, Nq, Nkv = m.hidden_size, m.intermediate_size, m.head_dim, m.num_attention_heads, m.num_key_value_heads
    return 2 * (D * Nq * Hd * 2 + D * Nkv * Hd * 2 + 3 * D * F) + 2 * 2 * Nq * Hd * keys


def measure(config: str, slice_name: str) -> dict:
    import jax.numpy as jnp

    from flows.compile_check import default_cache_dir, require_libtpu, slice_devices, use_compile_only_tpu
    from flows.compile_check import compiler_id
    from flows.preflight import resolve_model_config
    from grpo_core import aot
    from grpo_core.memory import get_accelerator
    from grpo_core.phases import update_width
    from grpo_core.sharding import make_mesh
    from schemas import load_run_config
    from tasks.device_groups import mesh_shape
    from tasks.session import make_trainer

    require_libtpu()
    use_compile_only_tpu()
    cfg, acc = load_run_config(config, []), get_accelerator(slice_name)
    mesh = make_mesh(mesh_shape(cfg, acc.hosts, acc.chips // acc.hosts), slice_devices(acc))
    derived, model = cfg.derive(acc.hosts, acc.chips), resolve_model_config(cfg.model.name_or_path)
    params = aot.abstract_params(model, jnp.dtype(cfg.model.dtype), mesh)
    trainer = make_trainer(cfg, model, mesh, derived.grad_accum_steps)
    opt = trainer.abstract_opt_state(params)
    r = cfg.rollout
    rows, width = derived.sequences_global_per_step, update_width(r.max_prompt_tokens, r.max_new_tokens)
    batch = aot.abstract_update_batch(rows, width, mesh)
    shared = trainer._shared_group(rows)
    store = aot.ResultStore(default_cache_dir(), compiler_id(acc))
    out = {"config": config, "slice": slice_name, "rows": rows, "micro_batches": derived.grad_accum_steps,
           "rows_per_device_per_micro_batch": rows // (derived.grad_accum_steps * derived.batch_shards),
           "group_size": r.n, "rows_sharing_a_prompt_forward": shared}
    for name, group in (("shared", r.n), ("unshared", 1)):
        trainer.group_size = group
        result = aot.compile_phase("update", lambda: trainer.lower(params, opt, batch), 0, store)
        out[f"{name}_flops_per_iteration"], out[f"{name}_compile_seconds"] = result.flops, round(result.seconds, 1)
    prompt = width - r.max_new_tokens
    skipped_rows = rows - rows // shared
    step = lambda prompt_rows: 3 * model.num_hidden_layers * (
        prompt_rows * prompt * layer_flops_per_token(model, prompt)
        + rows * (r.max_new_tokens - 1) * layer_flops_per_token(model, width)) + 3 * rows * r.max_new_tokens * 2 * \
        model.hidden_size * model.vocab_size
    out["step_flops_unshared"], out["step_flops_shared"] = step(rows), step(rows - skipped_rows)
    out["step_flops_saved_fraction"] = 1 - out["step_flops_shared"] / out["step_flops_unshared"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="run config (repeatable; default: the shipped bs128 ones)")
    parser.add_argument("--slice", default="v6e-8")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = [measure(c, args.slice) for c in (args.config or CONFIGS)]
    for r in rows:
        per_iter = (r["shared_flops_per_iteration"] / r["unshared_flops_per_iteration"]
                    if r["shared_flops_per_iteration"] and r["unshared_flops_per_iteration"] else float("nan"))
        print(f"{r['config']} on {r['slice']}: {r['rows_per_device_per_micro_batch']} rows per device per "
              f"micro-batch, groups of {r['group_size']} -> {r['rows_sharing_a_prompt_forward']} rows share one "
              f"prompt forward; XLA per-iteration FLOPs shared/unshared {per_iter:.3f}; step FLOPs saved "
              f"{r['step_flops_saved_fraction']:.1%} (compiles {r['shared_compile_seconds']} s, "
              f"{r['unshared_compile_seconds']} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
