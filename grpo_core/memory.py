"""Per-device peak memory estimate of one GRPO step, before any accelerator is rented.

`estimate_memory(workload)` adds up, per device and per phase, the bytes that our own
code keeps alive at its peak. The inputs are plain numbers (`Workload`), so grpo_core
never sees the config schema; flows/preflight.py maps a RunConfig onto them.

Assumptions, each checked against process RSS on CPU (benchmarks/memory_check.py) and
against XLA's own TPU compiler (benchmarks/tpu_calibration.py: the run's programs compiled
for v6e-8 / v5e-8 / v6e-16 on a CPU host, `grpo preflight --compile`):
1. Resident state stays on device for the whole step, so it counts in BOTH phases: params,
   optimizer state and, when beta > 0, the frozen reference params. The training session
   keeps them between phases.
2. Params, optimizer state and reference params are split per leaf by the rules table in
   grpo_core.sharding ("embed" over fsdp, heads/mlp/vocab over tp; a mesh axis that does
   not divide a dimension leaves it replicated). The batch is split over dp * fsdp.
3. With params split over fsdp/tp, XLA all-gathers them inside the layer scan, and
   gathers one whole [V, D] matrix (the embedding, or the untied LM head) for the logits
   instead of reducing partial [B, V] products. XLA's TPU buffer assignment for the
   sampler holds one gathered layer and that matrix at the peak; the update's estimate
   keeps two layers (the one computing and the prefetched next one) plus the matrix.
4. Optimizer moments follow optax: lion 1, adamw 2 (mu, nu), sgd 1 with momentum else 0,
   each in the param dtype (optax's default mu_dtype=None keeps the param dtype).
5. Update gradients: grpo_core.train_step sums micro-batch gradients into a float32
   accumulator shaped like the params, next to one micro-batch gradient in param dtype.
   On TPU XLA holds the accumulator once or twice (the scan carry's input and output),
   by its own schedule: the same 3B update program is 9.24 GiB for v6e-8 and 8.15 GiB for
   v5e-8, about one float32 param copy apart, and the 7B updates fit one copy. The
   estimate counts 1.5 copies on TPU (`TPU_ACCUMULATOR_COPIES`, `Workload.tpu`).
6. Activations: the decoder scans over layers, so in a forward only one layer's
   intermediates are live. Attention is materialised (no flash kernel): float32 scores
   [B, Nq, T, S] plus probabilities. For the backward pass without remat every layer keeps
   its residuals (`_saved_per_token_layer`); with remat (jax.checkpoint per layer) only
   the residual stream per layer is kept and one layer is recomputed at a time.
7. Logits are float32. The update holds several [mb, M, V] arrays for a
   micro-batch: on CPU 3 (logits, softmax for logsumexp/entropy, and their gradient), on
   TPU 1 (`TPU_UPDATE_LOGIT_COPIES`, `Workload.tpu`: XLA fuses them into one buffer): only the M
   completion columns go through the LM head. Its batch is T = `sampling.prompt_slots` +
   M new tokens wide (grpo_core.phases); when a micro-batch holds whole GRPO groups the
   prompt part runs once per group and its keys/values are repeated for the group's
   completions (grpo_core.train_step, "shared prompt kv"). The sampler
   (grpo_core.sampling) pads the global prompt count to a power of two and then to the
   batch shards, and the prompt length to `sampling.prompt_slots` (a power of two up to
   64, then four widths per doubling); it prefills each prompt once into
   a [L, P, Tp] cache, computes only the last position's logits, and repeats that cache n
   times into the decode cache [L, P*n, Tp+M]. XLA does NOT fuse the repeat into that
   write: the repeated [L, P*n, Tp] copy is live beside the decode cache (seen in the
   compiled TPU program). Rollout is one program with two peaks: "prefill" (decode cache,
   prompt cache, its repeated copy and one layer's prefill activations live) and "decode"
   (decode cache plus
   `DECODE_LOGIT_COPIES` [P*n, V] float32 arrays per step: logits, scaled, log-softmax,
   sorted values for top-p/top-k, probabilities, exp weights of the categorical draw).
8. Everything above is multiplied by (1 + overhead) for XLA temporaries, fragmentation
   and small buffers (default 10%). Capacity per device is the HBM per chip minus the
   runtime's reservation (TPU: 0.75 GiB); on GPU XLA preallocates 75% of memory by
   default (XLA_PYTHON_CLIENT_MEM_FRACTION=.75), so that fraction is the capacity.
9. No TPU tile padding: TPU arrays are stored in (8, 128) tiles of 32-bit words, but XLA
   chooses which two dims are tiled. A KV cache bf16[L, B, S, Nkv, Hd] is laid out
   {4,2,3,1,0:T(8,128)(2,1)}, i.e. [L, B, Nkv, S, Hd] tiled over (S, Hd), so its kv
   heads are not padded, and XLA's buffer assignment holds head_dim-64 caches at their raw
   size too; params take their raw size (Qwen2.5 0.5B-7B on v6e-8: XLA's argument bytes
   equal the raw shard sizes). The estimate is the same on TPU, GPU and CPU.
10. Generation layout (rollout.weights_layout, grpo_core.layouts): with "replicated" or
   "tp" the sampler runs on another mesh over the same devices, with its own copy of the
   weights ("generation weights": all of them, or their tp share) beside the resident
   training state; the KV cache, prefill activations and sampler buffers are split as on
   that mesh, and no weights are gathered. With "fsdp" the rollout estimate is the one above.
   Float32 weights on TPU ("float32 weight copies"): XLA:TPU runs the matmuls in bf16 at
   default precision and converts the generation copy's decoder-layer weights to bf16 once,
   outside the decode loop, and relays out the float32 [V, D] embedding for the logits
   (buffer assignment of configs/quickstart_cpu.yaml's replicated rollout on v6e-8: 195 MB
   of bf16 layer copies of the 212 MB, and a 120 MiB f32[49152,576] copy); both are
   counted whole. Without them that rollout's estimate was 0.83 of XLA's bytes.
11. LoRA (`Workload.lora_rank` > 0, grpo_core.lora): the base params stay resident in
   their dtype and are also the KL reference (no reference copy); the float32 adapters,
   their optimizer moments and the update's gradients (accumulator and one micro-batch's)
   are adapter-shaped, split like their base weights; the frozen embedding has no
   gradient. The rollout holds the merged target weights (a copy of those leaves, on the
   training mesh) or, with another generation layout, the resharded merged copy.
"""
from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

# The slice table lives in grpo_core.accelerators; its names stay importable from here.
from grpo_core.accelerators import ACCELERATORS, GIB, Accelerator, get_accelerator  # noqa: F401
from grpo_core.errors import UserError
from grpo_core.models.config import ModelConfig
from grpo_core.lora import LoraSpec, adapter_logical_axes, adapter_shapes
from grpo_core.models.decoder import param_logical_axes, param_shapes
from grpo_core.sampling import bucket, prompt_slots as sampler_prompt_slots
from grpo_core.sharding import logical_to_spec

UPDATE_LOGIT_COPIES = 3  # XLA:CPU (process RSS, benchmarks/memory_check.py)
# XLA:TPU's buffer assignment holds ONE float32 [mb, M, V] array at the update's peak
# (SmolLM2, 16x8, 512 new tokens, v6e-8: f32[4,512,49152], 384 MiB).
TPU_UPDATE_LOGIT_COPIES = 1
DECODE_LOGIT_COPIES = 6
# XLA:TPU holds the update's float32 gradient accumulator once or twice (assumption 5).
TPU_ACCUMULATOR_COPIES = 1.5
OPTIMIZER_MOMENTS = {"lion": 1, "adamw": 2, "sgd": 0}


@dataclasses.dataclass(frozen=True)
class Workload:
    """Everything the estimate reads: architecture, dtypes, GLOBAL batch and the mesh.

    prompts: global prompts per step (rollout.batch_size), each sampled group_size times;
    micro_batch: update rows per device per micro-batch; mesh: (("dp", n), ("fsdp", n),
    ("tp", n)).
    """

    model: ModelConfig
    param_bytes: int
    prompts: int
    group_size: int
    max_prompt_tokens: int
    new_tokens: int
    micro_batch: int
    remat: bool
    optimizer: str
    momentum: bool = False
    reference: bool = False
    mesh: tuple[tuple[str, int], ...] = (("dp", 1), ("fsdp", 1), ("tp", 1))
    tpu: bool = False  # the parts calibrated on XLA:TPU's buffer assignment (logits, accumulator)
    # The sampler's mesh when the weights are resharded for generation (grpo_core.layouts:
    # "replicated" or "tp"); None = the training layout ("fsdp"), the training mesh.
    generation_mesh: tuple[tuple[str, int], ...] | None = None
    lora_rank: int = 0  # > 0: the adapters train on a frozen base (assumption 11)
    lora_targets: tuple[str, ...] = ()
    # A split's sampler group (mesh.sampler_devices): the sampler's devices hold only its copy
    # of the (merged) params, no training state; `mesh` is then the sampler group's mesh.
    sampler_group: bool = False

    @property
    def mesh_sizes(self) -> dict[str, int]:
        return dict(self.mesh)

    @property
    def weights_layout(self) -> str:
        """The sampler's weights layout: "fsdp" (training mesh), "tp" or "replicated"."""
        if self.generation_mesh is None:
            return "fsdp"
        return "tp" if dict(self.generation_mesh)["tp"] > 1 else "replicated"

    @property
    def tp(self) -> int:
        return self.mesh_sizes.get("tp", 1)

    @property
    def batch_shards(self) -> int:
        return self.mesh_sizes.get("dp", 1) * self.mesh_sizes.get("fsdp", 1)

    @property
    def sampler_prompts_per_device(self) -> int:
        """The sampler pads the prompt batch to a power of two, then to the shard count."""
        return -(-bucket(self.prompts) // self.batch_shards)

    @property
    def prompt_slots(self) -> int:
        """Prompt cache length: the longest prompt bucketed as the sampler does."""
        return sampler_prompt_slots(self.max_prompt_tokens)

    @property
    def update_tokens(self) -> int:
        """Update batch width: the sampler's prompt slots (grpo_core.phases) plus completion."""
        return self.prompt_slots + self.new_tokens

    @property
    def update_rows_per_device(self) -> int:
        return max(1, self.prompts * self.group_size // self.batch_shards)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device: phases[phase][component], before overhead; totals include it."""

    phases: dict[str, dict[str, int]]
    overhead: float

    def total(self, phase: str) -> int:
        return int(sum(self.phases[phase].values()) * (1.0 + self.overhead))

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.total)

    @property
    def peak_bytes(self) -> int:
        return self.total(self.peak_phase)

    def largest(self, phase: str) -> str:
        """The component holding the most bytes in `phase` (what to shrink first)."""
        return max(self.phases[phase], key=self.phases[phase].get)


def _shard_shape(names, shape, mesh_sizes: dict[str, int]) -> tuple[int, ...]:
    """One device's block of a param leaf, split by the rules table in grpo_core.sharding."""
    spec = logical_to_spec(names, shape, SimpleNamespace(shape=mesh_sizes))
    out = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        axes = () if entry is None else (entry,) if isinstance(entry, str) else entry
        out.append(dim // math.prod(mesh_sizes[a] for a in axes))
    return tuple(out)


def param_bytes_per_device(w: Workload, itemsize: int) -> int:
    """Bytes one device holds of a params-shaped tree stored with `itemsize` bytes per element.

    Not padded to TPU tiles: XLA picks the layouts of the parameters (checked against
    grpo_core.aot.resident_bytes: Qwen2.5 0.5B-7B params on v6e-8 take their raw size).
    """
    shapes, axes = param_shapes(w.model), param_logical_axes(w.model)
    pairs = [(shapes[k], axes[k]) for k in shapes if k != "layers"]
    pairs += [(shapes["layers"][k], axes["layers"][k]) for k in shapes["layers"]]
    return sum(math.prod(_shard_shape(n, s, w.mesh_sizes)) * itemsize for s, n in pairs)


def adapter_bytes_per_device(w: Workload) -> int:
    """Bytes one device holds of the float32 LoRA adapters (0 without LoRA)."""
    if not w.lora_rank:
        return 0
    spec = LoraSpec(w.lora_rank, 1.0, targets=w.lora_targets)
    shapes, axes = adapter_shapes(w.model, spec)["layers"], adapter_logical_axes(w.model, spec)["layers"]
    return sum(math.prod(_shard_shape(axes[k][x], shapes[k][x], w.mesh_sizes)) * 4 for k in shapes for x in ("a", "b"))


def _target_bytes_per_device(w: Workload) -> int:
    """Bytes one device holds of the LoRA target weights (what a merge copies)."""
    shapes, axes = param_shapes(w.model)["layers"], param_logical_axes(w.model)["layers"]
    return sum(math.prod(_shard_shape(axes[k], shapes[k], w.mesh_sizes)) * w.param_bytes for k in w.lora_targets)


def _layer_weights(m: ModelConfig) -> int:
    """Parameters of one decoder layer (everything but the embedding and the LM head)."""
    return (m.num_params - m.vocab_size * m.hidden_size * (1 if m.tie_word_embeddings else 2)) // m.num_hidden_layers


def _gathered_weights(w: Workload, layers: int) -> int:
    """All-gather buffers when params are split over fsdp/tp: `layers` decoder layers plus
    one whole [V, D] matrix (the embedding, or the untied LM head: XLA gathers it for the
    logits rather than reduce partial [B, V] products)."""
    if w.mesh_sizes.get("fsdp", 1) * w.tp == 1:
        return 0
    m = w.model
    return (layers * _layer_weights(m) + m.vocab_size * m.hidden_size) * w.param_bytes // w.tp


def _resident(w: Workload) -> dict[str, int]:
    params = param_bytes_per_device(w, w.param_bytes)
    moments = OPTIMIZER_MOMENTS[w.optimizer] + (1 if w.optimizer == "sgd" and w.momentum else 0)
    if w.lora_rank:
        adapters = adapter_bytes_per_device(w)
        return {"params": params, "adapters": adapters, "optimizer state": moments * adapters}
    parts = {"params": params, "optimizer state": moments * params}
    if w.reference:
        parts["reference params"] = params
    return parts


def _saved_per_token_layer(m: ModelConfig, pb: int) -> int:
    """Bytes one token keeps per layer for the backward pass (no remat), attention excluded.

    Param-dtype: layer input, normed input, q, k, v, attention output, residual after
    attention, normed MLP input, gate, up, silu(gate)*up, and with a q/k norm (Qwen3) q and k
    before it. float32: the two RMSNorm inputs and RoPE'd q, k.
    """
    qkv = (m.num_attention_heads + 2 * m.num_key_value_heads) * m.head_dim
    attn_out = m.num_attention_heads * m.head_dim
    qk_normed = (m.num_attention_heads + m.num_key_value_heads) * m.head_dim if m.qk_norm else 0
    dtype_part = (4 * m.hidden_size + qkv + qk_normed + attn_out + 3 * m.intermediate_size) * pb
    f32_part = (2 * m.hidden_size + (m.num_attention_heads + m.num_key_value_heads) * m.head_dim) * 4
    return dtype_part + f32_part


def _attention_bytes(m: ModelConfig, rows: int, t: int, s: int, pb: int, tp: int) -> int:
    """float32 scores plus probabilities in param dtype for one layer: [rows, Nq, t, s]."""
    return rows * (m.num_attention_heads // math.gcd(m.num_attention_heads, tp)) * t * s * (4 + pb)


def _layer_activations(m: ModelConfig, rows: int, t: int, s: int, pb: int, tp: int) -> int:
    """One layer's live intermediates in a forward over [rows, t] tokens attending to s keys."""
    return rows * t * _saved_per_token_layer(m, pb) + _attention_bytes(m, rows, t, s, pb, tp)


def _kv_cache(w: Workload, rows: int, length: int) -> int:
    """k and v caches [L, rows, length, Nkv, Hd] in param dtype (kv heads split over tp).

    Not padded to TPU tiles: XLA lays them out as [L, rows, Nkv, length, Hd] tiled over
    (length, Hd), and stores head_dim 64 unpadded too (the 0.5B cache bf16[24,16,768,2,64]
    is a 72 MiB buffer in XLA's buffer assignment for v6e-8, its raw size).
    """
    m = w.model
    kv_heads = m.num_key_value_heads // math.gcd(m.num_key_value_heads, w.tp)
    return 2 * m.num_hidden_layers * rows * kv_heads * length * m.head_dim * w.param_bytes


def sampler_view(w: Workload) -> Workload:
    """The workload as the sampler sees it: on the generation mesh when there is one."""
    return w if w.generation_mesh is None else dataclasses.replace(w, mesh=w.generation_mesh, generation_mesh=None)


def _rollout_base(w: Workload) -> dict[str, int]:
    g = sampler_view(w)
    if w.sampler_group:
        parts = {} if g is not w else {"params": param_bytes_per_device(w, w.param_bytes)}
    else:
        parts = _resident(w)
    if g is not w:
        # The resharded copy lives beside the training state (resident unless this is a
        # split's sampler group). Its mesh has fsdp = 1: the decode loop gathers no weights
        # (tp splits them instead).
        parts["generation weights"] = param_bytes_per_device(g, w.param_bytes)
        parts["gathered weights"] = 0
        if w.tpu and w.param_bytes == 4:  # assumption 10: bf16 layer copies + the [V, D] relayout
            m = w.model
            parts["float32 weight copies"] = (m.num_hidden_layers * _layer_weights(m) * 2
                                              + m.vocab_size * m.hidden_size * 4) // g.tp
    else:
        parts["gathered weights"] = _gathered_weights(w, layers=1)
        if w.lora_rank and not w.sampler_group:
            parts["merged weights"] = _target_bytes_per_device(w)
    seqs = g.sampler_prompts_per_device * w.group_size
    parts["kv cache"] = _kv_cache(g, seqs, w.prompt_slots + w.new_tokens)
    return parts


def prefill_components(w: Workload) -> dict[str, int]:
    """Bytes per device while the sampler prefills the prompts (assumption 7)."""
    parts = _rollout_base(w)
    w = sampler_view(w)
    m, pb, prompts, slots = w.model, w.param_bytes, w.sampler_prompts_per_device, w.prompt_slots
    parts["prompt cache"] = _kv_cache(w, prompts, slots)
    parts["repeated prompt cache"] = _kv_cache(w, prompts * w.group_size, slots)
    # One layer's forward over the prompts, beyond the caches: the residual stream and the
    # float32 attention scores [P, Nq, Tp, Tp]. The MLP's [P, Tp, F] intermediates are not
    # live at the rollout's peak (XLA's buffer assignment: the caches and the gathered
    # weights are).
    heads = m.num_attention_heads // math.gcd(m.num_attention_heads, w.tp)
    parts["prefill activations"] = prompts * slots * 2 * m.hidden_size * pb + prompts * heads * slots * slots * 4
    return parts


def decode_components(w: Workload) -> dict[str, int]:
    """Bytes per device during a decode step: the cache plus per-step logits and outputs."""
    parts = _rollout_base(w)
    w = sampler_view(w)
    seqs = w.sampler_prompts_per_device * w.group_size
    vocab = w.model.vocab_size // math.gcd(w.model.vocab_size, w.tp)
    parts["sampler buffers"] = DECODE_LOGIT_COPIES * seqs * vocab * 4 + seqs * w.new_tokens * 8
    return parts


def update_components(w: Workload) -> dict[str, int]:
    """Bytes per device at the update's peak (backward of one micro-batch)."""
    m, pb, mb = w.model, w.param_bytes, w.micro_batch
    t = w.update_tokens - 1
    vocab = m.vocab_size // math.gcd(m.vocab_size, w.tp)
    parts = _resident(w)
    parts["gathered weights"] = _gathered_weights(w, layers=2)
    # The micro-batch scan's float32 accumulator (on TPU 1.5 copies, assumption 5: with one,
    # the estimate fell from 1.01 to 0.89 of XLA from the 0.5B to the 3B Qwen2.5 update on
    # v6e-8; with two it was 1.24-1.31 of XLA for the 7B updates), plus one micro-batch
    # gradient in the param dtype.
    copies = TPU_ACCUMULATOR_COPIES if w.tpu else 1
    if w.lora_rank:
        parts["gradients"] = int((copies + 1) * adapter_bytes_per_device(w))
    else:
        parts["gradients"] = int(copies * param_bytes_per_device(w, 4)) + param_bytes_per_device(w, pb)
    if w.mesh_sizes.get("fsdp", 1) * w.tp > 1 and not w.lora_rank:
        # The gathered [V, D] matrix's gradient, whole and float32, before it is reduce-
        # scattered onto the shards (f32[49152,576] in XLA's buffer assignment for SmolLM2).
        parts["head gradient"] = m.vocab_size * m.hidden_size * 4 // w.tp
    n = math.gcd(w.group_size, mb)
    if n > 1:
        # Shared prompts (grpo_core.train_step): runs of n = gcd(group size, rows per device)
        # rows share one prompt forward ([mb/n, Tp]); the completion inputs ([mb, M-1])
        # attend to its keys/values repeated n times.
        tp_, tc, L = t + 1 - w.new_tokens, w.new_tokens - 1, m.num_hidden_layers
        kv_heads = m.num_key_value_heads // math.gcd(m.num_key_value_heads, w.tp)
        parts["shared prompt kv"] = 2 * L * mb * tp_ * kv_heads * m.head_dim * pb
        prompt_layer = _layer_activations(m, mb // n, tp_, tp_, pb, w.tp)
        completion_layer = _layer_activations(m, mb, tc, tp_ + tc, pb, w.tp)
        stream = (mb // n * tp_ + mb * tc) * m.hidden_size * pb * L
        parts["activations"] = (stream + max(prompt_layer, completion_layer) if w.remat
                                else L * (prompt_layer + completion_layer))
    else:
        stream = mb * t * m.hidden_size * pb * m.num_hidden_layers
        layer = _layer_activations(m, mb, t, t, pb, w.tp)
        parts["activations"] = stream + layer if w.remat else m.num_hidden_layers * layer
    # Only the completion columns go through the LM head (Trainer(score_last=new_tokens)).
    copies = TPU_UPDATE_LOGIT_COPIES if w.tpu else UPDATE_LOGIT_COPIES
    parts["logits"] = copies * mb * min(t, w.new_tokens) * vocab * 4
    # tokens, positions, masks, old logps as [B, T] 4-byte arrays, plus their micro-batch split.
    parts["batch arrays"] = 2 * 5 * w.update_rows_per_device * (t + 1) * 4
    return parts


def estimate_memory(w: Workload, overhead: float = 0.10) -> MemoryEstimate:
    """Per-device bytes by phase and component (see the module docstring for the model)."""
    if w.optimizer not in OPTIMIZER_MOMENTS:
        raise UserError(f"optimizer {w.optimizer!r} has no memory model; use one of {sorted(OPTIMIZER_MOMENTS)}")
    phases = {"prefill": prefill_components(w), "decode": decode_components(w), "update": update_components(w)}
    return MemoryEstimate(phases, overhead)
