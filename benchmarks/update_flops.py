"""Update-phase FLOP/s on CPU as a fraction of a large matmul's FLOP/s, in the same run.

    python -m benchmarks.update_flops [--batch 8 --seq 256 --layers 4 --hidden 512 ...]

Both numbers come from one process on one machine, so the ratio does not depend on
how fast this particular CPU is (goal: update >= 50% of matmul). The two are timed in
alternating rounds and each reported as its median, so a neighbour's load on a shared
machine hits both alike; the same ratio by process CPU time (all threads) is reported
too, as it is less sensitive to neighbours taking the cores. The update is
`Trainer.step` (forward, log-probs with entropy, clipped loss, backward, SGD update) on a
small Llama-shaped model. Its FLOPs are counted analytically as the matmul work the
decoder executes: projections, MLP, LM head, and attention over all T x T scores (the
decoder computes the full square and masks it), times 3 for forward + backward (XLA's cost analysis is no cross-check here: it
counts the body of the scan over layers once). Writes update_flops.json into a new results
folder under ~/.cache/grpo-flows/benchmarks, or to `--out FILE`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.report import run_dir
from flows.cli.main import positive_int
from grpo_core.models.config import PRESETS, ModelConfig
from grpo_core.models.decoder import init_params, param_logical_axes
from grpo_core.sharding import make_mesh, shard_params
from grpo_core.train_step import Trainer



def bench_config(args) -> ModelConfig:
    """A Llama-shaped model big enough for matmuls to dominate, small enough for a CPU."""
    heads = args.hidden // args.head_dim
    return dataclasses.replace(
        PRESETS["tiny-llama"], vocab_size=args.vocab, hidden_size=args.hidden,
        intermediate_size=args.mlp, num_hidden_layers=args.layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4), head_dim=args.head_dim,
        max_position_embeddings=max(args.seq, 512))


def model_flops(cfg: ModelConfig, batch: int, seq: int) -> float:
    """Forward + backward matmul FLOPs of one update over [batch, seq] tokens (see module doc)."""
    D, F, V, Hd = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim
    Nq, Nkv, T = cfg.num_attention_heads, cfg.num_key_value_heads, seq - 1
    per_token_layer = 2 * (D * Nq * Hd * 2 + D * Nkv * Hd * 2 + 3 * D * F)
    per_token_attention = 2 * 2 * Nq * Hd * T
    per_token = cfg.num_hidden_layers * (per_token_layer + per_token_attention) + 2 * D * V
    return 3.0 * per_token * batch * T


def timed_alternating(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median wall and process-CPU seconds of each blocking fn(), in alternating rounds."""
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    median = lambda d: {name: statistics.median(t) for name, t in d.items()}
    return median(wall), median(cpu)


def matmul_fn(n: int):
    """A blocking float32 [n, n] @ [n, n] matmul under jit."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.dot)
    return lambda: matmul(a, b).block_until_ready()


def make_batch(cfg: ModelConfig, batch: int, seq: int) -> dict:
    """Random tokens; the second half of every row is the completion."""
    rng = np.random.default_rng(0)
    completion = np.zeros((batch, seq), np.float32)
    completion[:, seq // 2:] = 1.0
    return {"tokens_bt": rng.integers(3, cfg.vocab_size, (batch, seq)).astype(np.int32),
            "positions_bt": np.tile(np.arange(seq, dtype=np.int32), (batch, 1)),
            "attn_mask_bt": np.ones((batch, seq), bool), "completion_mask_bt": completion,
            "advantages_b": rng.normal(size=batch).astype(np.float32)}


def update_fn(cfg: ModelConfig, args):
    """A blocking call of one Trainer.step on the benchmark batch (state carried along)."""
    mesh = make_mesh(None)
    trainer = Trainer(cfg, optax.sgd(1e-6), mesh=mesh, micro_batches=args.micro_batches,
                      remat=args.remat)
    state = {"params": shard_params(init_params(cfg, jax.random.PRNGKey(0)),
                                    param_logical_axes(cfg), mesh)}
    state["opt"] = trainer.init_opt_state(state["params"])
    batch = trainer.shard_batch(make_batch(cfg, args.batch, args.seq))

    def step():
        state["params"], state["opt"], metrics = trainer.step(state["params"], state["opt"], batch)
        jax.block_until_ready((state["params"], metrics))

    return step


def run(args) -> dict:
    cfg = bench_config(args)
    seconds, cpu_seconds = timed_alternating({"matmul": matmul_fn(args.matmul_n),
                                              "update": update_fn(cfg, args)}, args.repeats)
    matmul = 2.0 * args.matmul_n**3 / seconds["matmul"]
    flops = model_flops(cfg, args.batch, args.seq)
    n_params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(
        lambda: init_params(cfg, jax.random.PRNGKey(0)))))
    return {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "jax": jax.__version__, "devices": len(jax.devices()),
                    "load_avg_1m": os.getloadavg()[0]},
        "config": {**vars(args), "params": int(n_params)},
        "matmul_gflops_per_s": matmul / 1e9,
        "update_seconds": seconds["update"],
        "update_model_gflops": flops / 1e9,
        "update_gflops_per_s": flops / seconds["update"] / 1e9,
        "fraction_of_matmul": flops / seconds["update"] / matmul,
        "fraction_of_matmul_cpu_time": (flops / cpu_seconds["update"])
        / (2.0 * args.matmul_n**3 / cpu_seconds["matmul"]),
    }


def print_table(result: dict) -> None:
    rows = [
        ("matmul %d^3 float32" % result["config"]["matmul_n"], f"{result['matmul_gflops_per_s']:.1f} GFLOP/s"),
        ("update step (median)", f"{result['update_seconds'] * 1e3:.1f} ms"),
        ("update model FLOPs", f"{result['update_model_gflops']:.2f} GFLOP"),
        ("update achieved", f"{result['update_gflops_per_s']:.1f} GFLOP/s"),
        ("update / matmul", f"{100 * result['fraction_of_matmul']:.1f} %  (goal >= 50 %)"),
        ("update / matmul, CPU time", f"{100 * result['fraction_of_matmul_cpu_time']:.1f} %"),
        ("load average (1 min)", f"{result['machine']['load_avg_1m']:.1f} on "
                                 f"{result['machine']['cpus']} CPUs"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in [("batch", 8), ("seq", 256), ("layers", 4), ("hidden", 512),
                          ("mlp", 1536), ("head_dim", 64), ("vocab", 8192),
                          ("micro_batches", 1), ("matmul_n", 2048), ("repeats", 5)]:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=positive_int, default=default)
    p.add_argument("--remat", action="store_true", help="recompute layers in the backward pass")
    p.add_argument("--out", type=Path, default=None, help="JSON result file")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = args.out or run_dir() / "update_flops.json"
    del args.out
    result = run(args)
    print_table(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
