"""Estimate vs measured peak memory on CPU: is grpo_core.memory within +-30%?

For each of three configs of a tiny llama-shaped model and each phase, a FRESH
subprocess builds the model inputs, runs the real code once (grpo_core.sampling.generate
for rollout, grpo_core.train_step.Trainer.step for update) to compile and warm it, then
resets the kernel's peak-RSS counter (/proc/self/clear_refs = 5) and runs it 3 more times.

    measured = (peak RSS during those runs - RSS just before them) + bytes of the arrays
               already alive before it (params, optimizer state, batch)

The baseline is the same process just before the measured run (jax imported, inputs
built, function compiled), so compiler memory, which lives on the host of an accelerator,
is not counted. Large buffers are mmapped (MALLOC_MMAP_THRESHOLD_) so freed memory leaves
the RSS and cannot hide a peak. The CPU backend reports no memory_stats (checked: None),
so RSS is the measure. The estimate is `estimate_memory(...).total(phase)` for the same
workload on one device (no TPU tiles); for rollout the larger of its prefill and decode.

Run: python benchmarks/memory_check.py [--json FILE]   (about 2 minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import subprocess
import sys
from types import SimpleNamespace

from grpo_core.memory import Workload, estimate_memory
from grpo_core.models.config import ModelConfig

# Llama-shaped, 4 layers, d=256, GQA 4/2 heads of 64; vocab big enough that logits dominate
# like they do for Qwen2.5 (V/D ~ 40-125).
TINY = ModelConfig(vocab_size=16384, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=64, tie_word_embeddings=False,
                   max_position_embeddings=2048, eos_token_ids=(2,), pad_token_id=0, architecture="llama")

CONFIGS = {
    "small": dict(prompts=4, group_size=4, max_prompt_tokens=64, new_tokens=64, micro_batch=16, remat=False),
    "wide": dict(prompts=8, group_size=8, max_prompt_tokens=128, new_tokens=128, micro_batch=16, remat=True),
    "long": dict(prompts=2, group_size=8, max_prompt_tokens=256, new_tokens=256, micro_batch=4, remat=False),
}
# The measured rollout (one generate call) peaks in whichever of these estimated phases is larger.
ROLLOUT_PHASES = {"rollout": ("prefill", "decode")}
ENV = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def workload(name: str) -> Workload:
    return Workload(model=TINY, param_bytes=4, optimizer="lion", **CONFIGS[name])


def _rss_bytes(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _measure(run, resident_trees, repeats: int = 3) -> dict:
    """Compile and warm with one run, then the peak RSS delta over `repeats` more runs.

    XLA's CPU runtime runs independent ops concurrently, so which buffers overlap varies
    from run to run (seen: +-10%); an OOM happens at the worst run, so take the max.
    """
    import jax

    jax.block_until_ready(run())
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so `before` holds no garbage
    before = _rss_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    for _ in range(repeats):
        jax.block_until_ready(run())
    resident = sum(x.nbytes for t in resident_trees for x in jax.tree.leaves(t))
    return {"delta": _rss_bytes("VmHWM") - before, "resident": resident}


def _optimizer():
    from grpo_core.optim import build_optimizer

    schedule = SimpleNamespace(type="constant", peak_value=1e-6, init_value=0.0, end_value=0.0,
                               warmup_ratio=0.0, warmup_steps=0)
    cfg = SimpleNamespace(name="lion", clip_norm=1.0, weight_decay=1e-8, b1=None, b2=None, eps=1e-8,
                          lr_schedule=schedule)
    return build_optimizer(cfg, 10)


def measure_rollout(w: Workload) -> dict:
    """Peak of grpo_core.sampling.generate with params and optimizer state resident."""
    import jax
    import numpy as np

    from grpo_core.models.decoder import init_params
    from grpo_core.models.model import Model
    from grpo_core.sampling import generate

    params = init_params(TINY, jax.random.key(0))
    opt_state = _optimizer().init(params)
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, TINY.vocab_size, (w.prompts, w.max_prompt_tokens)).tolist()
    model = Model(TINY, params)
    run = lambda: generate(model, prompts, w.new_tokens, n=w.group_size, stop_at_eos=False).tokens_bt
    return _measure(run, [params, opt_state])


def _train_batch(w: Workload) -> dict:
    import numpy as np

    rows, width = w.update_rows_per_device, w.update_tokens
    rng = np.random.default_rng(0)
    completion = np.zeros((rows, width), np.float32)
    completion[:, width - w.new_tokens:] = 1.0
    tokens = rng.integers(3, TINY.vocab_size, (rows, width)).astype(np.int32)
    prompt = width - w.new_tokens  # the rows of a GRPO group share their prompt, as in the pipeline
    tokens[:, :prompt] = np.repeat(tokens[::w.group_size, :prompt], w.group_size, axis=0)
    return {"tokens_bt": tokens,
            "positions_bt": np.tile(np.arange(width, dtype=np.int32), (rows, 1)),
            "attn_mask_bt": np.ones((rows, width), bool), "completion_mask_bt": completion,
            "advantages_b": rng.standard_normal(rows).astype(np.float32),
            "old_logps_bt": -rng.random((rows, width)).astype(np.float32)}


def measure_update(w: Workload) -> dict:
    """Peak of one grpo_core.train_step.Trainer.step (params and state donated)."""
    import jax

    from grpo_core.models.decoder import init_params, param_logical_axes
    from grpo_core.sharding import make_mesh, shard_params
    from grpo_core.train_step import Trainer

    mesh = make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
    state = {"params": shard_params(init_params(TINY, jax.random.key(0)), param_logical_axes(TINY), mesh)}
    # Configured like the pipeline's (tasks/session.py): completions scored in the last
    # new_tokens columns, prompts shared within each group.
    trainer = Trainer(TINY, _optimizer(), mesh=mesh, micro_batches=w.update_rows_per_device // w.micro_batch,
                      remat=w.remat, score_last=w.new_tokens, group_size=w.group_size)
    state["opt"] = trainer.init_opt_state(state["params"])
    batch = trainer.shard_batch(_train_batch(w))

    def run():
        state["params"], state["opt"], metrics = trainer.step(state["params"], state["opt"], batch)
        return metrics

    jax.block_until_ready(run())  # the state must exist before the resident bytes are read
    return _measure(run, [state["params"], state["opt"], batch])


def measure_in_subprocess(name: str, phase: str) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), "--child", name, phase]
    out = subprocess.run(argv, env={**os.environ, **ENV}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(names=tuple(CONFIGS), phases=("rollout", "update")) -> list[dict]:
    """One row per (config, phase): estimate, measured and their ratio."""
    rows = []
    for name in names:
        estimate = estimate_memory(workload(name))
        for phase in phases:
            measured = measure_in_subprocess(name, phase)
            total = measured["delta"] + measured["resident"]
            predicted = max(estimate.total(p) for p in ROLLOUT_PHASES.get(phase, (phase,)))
            rows.append({"config": name, "phase": phase, "estimate": predicted,
                         "measured": total, "ratio": predicted / total, **measured,
                         "workload": {k: v for k, v in dataclasses.asdict(workload(name)).items() if k != "model"}})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "PHASE"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.child:
        name, phase = args.child
        measure = measure_rollout if phase == "rollout" else measure_update
        print(json.dumps(measure(workload(name))))
        return 0
    rows = compare()
    mib = 1024**2
    print(f"{'config':8s} {'phase':8s} {'estimate MiB':>13s} {'measured MiB':>13s} {'est/meas':>9s}")
    for r in rows:
        print(f"{r['config']:8s} {r['phase']:8s} {r['estimate'] / mib:13.1f} {r['measured'] / mib:13.1f} {r['ratio']:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
