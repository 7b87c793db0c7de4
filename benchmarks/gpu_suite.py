"""GPU suite: decode vs the memory-bandwidth bound and update MFU, on one GPU, one run.

Needs only JAX (with CUDA), numpy and grpo_core. The model is Qwen2.5-1.5B-shaped with
random bfloat16 weights (the speed does not depend on the values).

- Device-copy bandwidth: a jitted elementwise pass over a 2 GiB array (reads and writes
  every byte), best of several calls.
- Decode: `grpo_core.sampling.generate` for 64 and 256 sequences, fixed length
  (EOS off). Seconds per decode step = (t(prompt, M new) - t(prompt, 1 new)) / (M - 1),
  i.e. the prefill is subtracted. The bound: the bytes one decode step must read (every
  weight once, the tied embedding as the LM head, and the K/V of the valid context at its
  mean length) divided by the measured copy bandwidth.
  Goal on H100/H200: >= 50% of the bound at 256 sequences.
- Update: `Trainer.step` (forward with entropy, clipped loss, backward, AdamW) on a
  [B, T] batch; model FLOPs counted as in benchmarks.update_flops; MFU = achieved FLOP/s
  over a bf16 [8192]^3 matmul measured in the same run. Goal: >= 40%.
- Peer: HF transformers `generate` (greedy, same shapes, bf16, random weights, static
  KV cache off) on the same GPU when torch with CUDA and transformers are importable;
  skipped with a note otherwise.

    python -m benchmarks.gpu_suite [--quick] [--out results/gpu_suite.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# Leave GPU memory to the torch peer; JAX would otherwise take 75% up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from grpo_core.models.config import PRESETS  # noqa: E402
from grpo_core.models.decoder import init_params, param_logical_axes  # noqa: E402
from grpo_core.models.model import Model  # noqa: E402
from grpo_core.sampling import generate  # noqa: E402
from grpo_core.sharding import make_mesh, shard_params  # noqa: E402
from grpo_core.train_step import Trainer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "gpu_suite.json"


def best_seconds(fn, repeats: int) -> float:
    """Minimum wall seconds of a blocking fn() over `repeats` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def copy_bandwidth(gib: float = 2.0, repeats: int = 10) -> float:
    """Bytes/s of a jitted read-modify-write pass over a `gib` GiB bfloat16 array."""
    x = jnp.ones((int(gib * 2**30) // 2,), jnp.bfloat16)
    bump = jax.jit(lambda a: a + jnp.bfloat16(1))
    seconds = best_seconds(lambda: bump(x).block_until_ready(), repeats)
    return 2 * x.nbytes / seconds


def matmul_flops(n: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of a jitted bf16 [n, n] @ [n, n] with float32 accumulation."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32).astype(jnp.bfloat16))
    return 2.0 * n**3 / best_seconds(lambda: dot(a, b).block_until_ready(), repeats)


def build_model(cfg, mesh) -> Model:
    params = shard_params(init_params(cfg, jax.random.PRNGKey(0), jnp.bfloat16), param_logical_axes(cfg), mesh)
    return Model(cfg, params)


def decode_step_bytes(cfg, params, sequences: int, mean_context: float) -> float:
    """Bytes one decode step must read: every weight once and the K/V of the valid context (bf16).

    The input embedding lookup reads only `sequences` rows, so an untied embedding does not
    count; a tied one does, as the LM head reads all of it.
    """
    weights = sum(x.nbytes for x in jax.tree.leaves(params))
    if not cfg.tie_word_embeddings:
        weights -= params["embed"].nbytes
    kv = 2 * cfg.num_hidden_layers * sequences * mean_context * cfg.num_key_value_heads * cfg.head_dim * 2
    return float(weights + kv)


def measure_decode(model: Model, sequences: int, prompt_len: int, new_tokens: int, bandwidth: float,
                   repeats: int, unroll_layers: bool | None = None) -> dict:
    """Decode tokens/s of `sequences` rows and its fraction of the bandwidth bound.

    `unroll_layers` picks the sampler's decode path (None: its platform default).
    """
    rng = np.random.default_rng(0)
    prompts = rng.integers(10, model.config.vocab_size - 10, (sequences, prompt_len)).tolist()
    run = lambda m: generate(model, prompts, m, temperature=0.0, stop_at_eos=False,  # noqa: E731
                             unroll_layers=unroll_layers)
    prefill = best_seconds(lambda: run(1), repeats)
    full = best_seconds(lambda: run(new_tokens), repeats)
    per_step = (full - prefill) / (new_tokens - 1)
    step_bytes = decode_step_bytes(model.config, model.params, sequences, prompt_len + new_tokens / 2)
    bound = step_bytes / bandwidth
    return {"sequences": sequences, "prompt_len": prompt_len, "new_tokens": new_tokens,
            "unroll_layers": unroll_layers, "prefill_seconds": prefill, "generate_seconds": full,
            "decode_step_seconds": per_step,
            "decode_tokens_per_s": sequences / per_step, "bytes_per_step": step_bytes,
            "bound_step_seconds": bound, "bound_tokens_per_s": sequences / bound,
            "fraction_of_bound": bound / per_step}


def update_step(cfg, mesh, batch: int, seq: int, micro_batches: int = 1):
    """A blocking `step()` of Trainer.step (AdamW) on a random [batch, seq] batch, run once."""
    from benchmarks.update_flops import make_batch

    trainer = Trainer(cfg, optax.adamw(1e-6), mesh=mesh, micro_batches=micro_batches)
    state = {"params": build_model(cfg, mesh).params}
    state["opt"] = trainer.init_opt_state(state["params"])
    data = trainer.shard_batch(make_batch(cfg, batch, seq))

    def step():
        state["params"], state["opt"], metrics = trainer.step(state["params"], state["opt"], data)
        jax.block_until_ready((state["params"], metrics))

    # bf16 params get float32 AdamW moments after the first update (float32 gradients), which
    # changes the step's input types: the second call compiles again, so callers warm up
    # once more (best_seconds and top_ops both do).
    step()
    return step


def measure_update(cfg, mesh, batch: int, seq: int, peak_flops: float, repeats: int, micro_batches: int = 1) -> dict:
    """Trainer.step seconds on a random [batch, seq] batch and its MFU vs the measured matmul.

    All `seq` columns are scored (no prompt part), so the model FLOPs count every token.
    """
    from benchmarks.update_flops import model_flops

    seconds = best_seconds(update_step(cfg, mesh, batch, seq, micro_batches), repeats)
    flops = model_flops(cfg, batch, seq)
    return {"batch": batch, "seq": seq, "micro_batches": micro_batches, "seconds": seconds,
            "model_tflops": flops / 1e12, "achieved_tflops_per_s": flops / seconds / 1e12,
            "mfu_vs_matmul": flops / seconds / peak_flops}


def hf_generate_peer(cfg, sequences: int, prompt_len: int, new_tokens: int, repeats: int) -> dict:
    """HF transformers greedy generate on the same GPU, or {"skipped": reason}."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, Qwen2Config
    except ImportError as err:
        return {"skipped": f"torch/transformers not importable ({err})"}
    if not torch.cuda.is_available():
        return {"skipped": "torch has no CUDA device here"}
    hf_cfg = Qwen2Config(**{k: v for k, v in cfg.to_hf().items() if k not in ("architectures", "model_type")})
    model = AutoModelForCausalLM.from_config(hf_cfg).to(device="cuda", dtype=torch.bfloat16).eval()
    ids = torch.randint(10, cfg.vocab_size - 10, (sequences, prompt_len), device="cuda")

    def run(m):
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=m, min_new_tokens=m,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
        torch.cuda.synchronize()

    prefill = best_seconds(lambda: run(1), repeats)
    per_step = (best_seconds(lambda: run(new_tokens), repeats) - prefill) / (new_tokens - 1)
    del model
    torch.cuda.empty_cache()
    return {"sequences": sequences, "decode_step_seconds": per_step, "decode_tokens_per_s": sequences / per_step,
            "torch": torch.__version__}


def profile_or_note(fn) -> dict:
    """Top ops of `fn` (benchmarks.op_profile), or {"error": ...} if the profiler fails here."""
    from benchmarks.op_profile import top_ops

    try:
        return top_ops(fn, reps=2)
    except Exception as err:  # the profile explains a figure; it must not lose the figures
        return {"error": f"{type(err).__name__}: {err}"}


def run(quick: bool, model_name: str = "qwen2.5-1.5b", sequences=(64, 256), update_batch: int = 8,
        checkpoint=None, profile: bool = True, update_micro_batches: int = 4) -> dict:
    """The whole suite; `checkpoint(result_so_far)` is called after each section."""
    cfg = PRESETS[model_name]
    mesh = make_mesh({"fsdp": 1}, jax.devices()[:1])
    repeats = 2 if quick else 5
    prompt_len, new_tokens = 128, (64 if quick else 128)
    bandwidth, peak = copy_bandwidth(), matmul_flops()
    out = {"model": f"{model_name} shape, random init, bfloat16", "device": str(jax.devices()[0].device_kind),
           "copy_bandwidth_gb_per_s": bandwidth / 1e9, "matmul_bf16_tflops_per_s": peak / 1e12, "quick": quick,
           "goals": {"decode_fraction_of_bound_at_256": ">= 0.5", "update_mfu_vs_matmul": ">= 0.4"}}
    save = checkpoint or (lambda _: None)
    model = build_model(cfg, mesh)
    out["decode"] = []
    for s in sequences:
        out["decode"].append(measure_decode(model, s, prompt_len, new_tokens, bandwidth, repeats))
        save(out)
    # The same decode through the layer scan (the CPU/TPU path), for the record of what the
    # platform default gains.
    out["decode_layer_scan"] = measure_decode(model, sequences[-1], prompt_len, new_tokens, bandwidth, repeats,
                                              unroll_layers=False)
    save(out)
    if profile:
        prompts = np.random.default_rng(0).integers(10, cfg.vocab_size - 10, (sequences[-1], prompt_len)).tolist()
        out["decode_profile"] = profile_or_note(
            lambda: generate(model, prompts, new_tokens, temperature=0.0, stop_at_eos=False))
        save(out)
    del model
    seq = 512 if quick else 1024
    out["update"] = measure_update(cfg, mesh, batch=update_batch, seq=seq, peak_flops=peak, repeats=repeats,
                                   micro_batches=update_micro_batches)
    save(out)
    out["hf_generate_peer"] = [hf_generate_peer(cfg, s, prompt_len, new_tokens, repeats) for s in sequences]
    for ours, peer in zip(out["decode"], out["hf_generate_peer"]):
        if "decode_tokens_per_s" in peer:
            peer["ours_speedup"] = ours["decode_tokens_per_s"] / peer["decode_tokens_per_s"]
    out["met"] = {"decode": out["decode"][-1]["fraction_of_bound"] >= 0.5,
                  "update": out["update"]["mfu_vs_matmul"] >= 0.4}
    save(out)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter decode, smaller update, fewer repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-profile", action="store_true", help="skip the op profile of the decode")
    args = parser.parse_args(argv)
    if jax.default_backend() != "gpu":
        raise SystemExit(f"gpu_suite needs a GPU; JAX's backend here is {jax.default_backend()!r}")
    from benchmarks.report import environment

    env = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def checkpoint(partial: dict) -> None:  # a run cut short still leaves what it measured
        args.out.write_text(json.dumps({"benchmark": "gpu_suite", "environment": env, **partial},
                                       indent=2, default=float) + "\n")

    result = {"benchmark": "gpu_suite", "environment": env,
              **run(args.quick, checkpoint=checkpoint, profile=not args.no_profile)}
    print(json.dumps({k: result[k] for k in ("device", "copy_bandwidth_gb_per_s", "matmul_bf16_tflops_per_s", "met")},
                     indent=1, default=float))
    for d in result["decode"] + [result["decode_layer_scan"]]:
        print(f"decode {d['sequences']} seqs: {d['decode_tokens_per_s']:.0f} tok/s, {100 * d['fraction_of_bound']:.0f}% of bound")
    print(f"update MFU vs matmul {100 * result['update']['mfu_vs_matmul']:.0f}%; peers: {result['hf_generate_peer']}")
    if "ops" in result.get("decode_profile", {}):
        from benchmarks.op_profile import format_ops

        print("decode op profile (one generate call):\n" + format_ops(result["decode_profile"]))
    return result


if __name__ == "__main__":
    main()
