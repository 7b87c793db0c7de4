"""rollout.weights_layout=auto: which generation layout (grpo_core.layouts) a run samples on.

The memory estimate (grpo_core.memory) says which layouts fit; on a TPU a decode roofline
from the chip's rates (grpo_core.accelerators.DECODE_RATES) ranks those that do.
"""
from __future__ import annotations

import dataclasses

from grpo_core.layouts import generation_mesh_shape, tp_size
from grpo_core.memory import MemoryEstimate, Workload, _kv_cache, decode_components, prefill_components, sampler_view

# Assumed cost of one small collective inside the decode loop (not measured: no TPU here).
COLLECTIVE_LATENCY_S = 10e-6


def with_weights_layout(w: Workload, layout: str, local_devices: int) -> Workload:
    """`w` with the sampler on `layout`'s generation mesh (grpo_core.layouts); "fsdp" leaves it as is."""
    shape = generation_mesh_shape(layout, w.mesh_sizes, w.model, local_devices)
    same = all(w.mesh_sizes.get(a, 1) == n for a, n in shape.items())  # e.g. one device: nothing to reshard
    return dataclasses.replace(w, generation_mesh=None if same else tuple(shape.items()))


def decode_step_seconds(w: Workload, rates: tuple[float, float], latency: float = COLLECTIVE_LATENCY_S) -> float:
    """Predicted seconds of one decode step of `w`'s sampler layout, to rank layouts (not a measurement).

    rates: (HBM bytes/s, ICI bytes/s received) per chip. Each chip reads its weights and its
    whole KV cache once per step; fsdp also all-gathers (n-1)/n of the weights (one
    collective per layer and one for the [V, D] matrix), tp all-reduces two [rows, D]
    activations per layer (2(n-1)/n of them; plus the embedding lookup, the split softmax's
    max and sum and the logits' gather). Perfect overlap of HBM and ICI, plus `latency` per
    collective. benchmarks/tpu_roofline.py counts the same bytes from the compiled programs.
    """
    hbm_rate, ici_rate = rates
    m, g = w.model, sampler_view(w)
    rows = g.sampler_prompts_per_device * w.group_size
    kv = _kv_cache(g, rows, w.prompt_slots + w.new_tokens)
    shards, tp = g.mesh_sizes.get("fsdp", 1) * g.tp, g.tp
    ici, collectives = 0.0, 0
    if g.mesh_sizes.get("fsdp", 1) > 1:
        ici += m.num_params * w.param_bytes / tp * (1 - tp / shards)
        collectives += m.num_hidden_layers + 1
    weights = m.num_params * w.param_bytes / tp
    if tp > 1:
        ici += 2 * m.num_hidden_layers * rows * m.hidden_size * w.param_bytes * 2 * (tp - 1) / tp
        collectives += 2 * m.num_hidden_layers + 4
    return max((weights + kv) / hbm_rate, ici / ici_rate) + collectives * latency


def choose_weights_layout(w: Workload, capacity_bytes: int, local_devices: int, overhead: float = 0.10,
                          rates: tuple[float, float] | None = None) -> str:
    """rollout.weights_layout=auto: of "replicated" (every device holds all the weights beside
    the resident training state and the KV cache) and "tp" (when it applies to the model),
    the one whose rollout fits; when both fit, with `rates` (a TPU generation's, from
    DECODE_RATES) the one with the shorter predicted decode step, without them "replicated".
    "fsdp" (the training layout) when neither fits."""
    fitting = []
    for layout in ("replicated", "tp"):
        if layout == "tp" and tp_size(w.model, local_devices) == 1:
            continue
        g = with_weights_layout(w, layout, local_devices)
        rollout = MemoryEstimate({"prefill": prefill_components(g), "decode": decode_components(g)}, overhead)
        if rollout.peak_bytes <= capacity_bytes:
            fitting.append((layout, g))
    if not fitting:
        return "fsdp"
    if rates is None:
        return fitting[0][0]
    return min(fitting, key=lambda pair: decode_step_seconds(pair[1], rates))[0]
