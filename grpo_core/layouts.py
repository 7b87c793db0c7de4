"""Generation layout of the weights: where the sampler's copy of the params lives.

Training keeps the params split over "fsdp" (grpo_core.sharding). A decode step reads
every weight once per generated token, so with the training layout XLA all-gathers each
layer's weights inside the decode loop, every token, and the whole [V, D] embedding for
the logits too: for Qwen2.5-3B on a v6e-8 that is 5.4 GB over ICI per token step, three
times what reading the weights from HBM costs (benchmarks/tpu_roofline.py). Samplers that
share devices with a trainer (vLLM-TPU, JetStream, verl, tunix) reshard the weights for
generation instead; so do we, once per rollout, never per token.

A generation layout is the same devices arranged as another mesh, with the params placed
on it by the one rules table (the table is unchanged: "embed" -> fsdp means nothing on a
mesh whose fsdp axis is 1):

- "replicated": every device holds all the weights; dp = every device, the batch split
  over all of them. No weight collectives at all.
- "tp": heads, MLP width and vocabulary split over a tp axis inside a host (tp = the
  largest divisor of the host's device count that divides both head counts, so the KV
  cache splits too), dp over the rest: per layer an all-reduce of [B, D] activations
  instead of a gather of the layer's weights.
- "fsdp": the training mesh and params as they are.

Which layouts fit is the memory estimate's question, and on a TPU which of those decodes
faster a roofline's (`grpo_core.layout_choice`).
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh

from grpo_core.errors import UserError
from grpo_core.models.config import ModelConfig
from grpo_core.models.decoder import param_logical_axes
from grpo_core.sharding import MESH_AXES, by_process, host_major_mesh, make_mesh, tree_shardings

LAYOUTS = ("replicated", "tp", "fsdp")


def tp_size(cfg: ModelConfig, local_devices: int) -> int:
    """The largest tp that divides the host's device count and both head counts (1: tp does not apply)."""
    heads = math.gcd(cfg.num_attention_heads, cfg.num_key_value_heads)
    return max(t for t in range(1, local_devices + 1) if local_devices % t == 0 and heads % t == 0)


def generation_mesh_shape(layout: str, mesh_sizes: dict[str, int], cfg: ModelConfig,
                          local_devices: int) -> dict[str, int]:
    """Axis sizes of the generation mesh over the same devices as a mesh of `mesh_sizes`."""
    devices = math.prod(mesh_sizes.values())
    if layout == "fsdp":
        return {"dp": mesh_sizes.get("dp", 1), "fsdp": mesh_sizes.get("fsdp", 1), "tp": mesh_sizes.get("tp", 1)}
    if layout == "replicated":
        return {"dp": devices, "fsdp": 1, "tp": 1}
    if layout == "tp":
        tp = tp_size(cfg, local_devices)
        if tp == 1:
            raise UserError(
                f"rollout.weights_layout=tp: no tp > 1 divides both the {cfg.num_attention_heads} query heads and "
                f"the {cfg.num_key_value_heads} kv heads and the host's {local_devices} devices; use "
                "rollout.weights_layout=replicated or fsdp")
        return {"dp": devices // tp, "fsdp": 1, "tp": tp}
    raise UserError(f"rollout.weights_layout={layout!r} is not a layout; use one of {', '.join(LAYOUTS)} or auto")


def generation_mesh(mesh: Mesh, layout: str, cfg: ModelConfig, local_devices: int) -> Mesh:
    """The generation mesh over `mesh`'s devices (`mesh` itself when the shape is the same)."""
    shape = generation_mesh_shape(layout, dict(mesh.shape), cfg, local_devices)
    if all(mesh.shape[a] == shape[a] for a in shape):
        return mesh
    devices = list(mesh.devices.flat)
    several_hosts = len({d.process_index for d in devices}) > 1
    if shape["tp"] > 1 and several_hosts:
        return Mesh(host_local_tp_grid(devices, shape["tp"]), MESH_AXES)
    try:
        return make_mesh(shape, devices)
    except AssertionError:  # mesh_utils: a group of several hosts' chips that is no block of the grid
        if not several_hosts:
            raise
        return host_major_mesh(shape, devices)


def host_local_tp_grid(devices, tp: int) -> np.ndarray:
    """[dp, 1, tp] devices whose tp groups never leave a host.

    A whole-slice device mesh (mesh_utils) may run a tp group along a physical axis that
    crosses hosts (7B's tp=4 on v6e-16's 4x4 chips, 2x2 per host); the per-layer
    all-reduces of a tp layout belong inside one host. Each host's devices are ordered by
    their chip coordinates (so a group of 2 is two neighbours), then cut into groups of tp.
    """
    hosts: dict[int, list] = {}
    for d in devices:
        hosts.setdefault(d.process_index, []).append(d)
    groups = []
    for index in sorted(hosts):
        local = sorted(hosts[index], key=lambda d: (tuple(reversed(getattr(d, "coords", ()) or ())), d.id))
        if len(local) % tp:
            raise UserError(f"rollout.weights_layout=tp: tp={tp} does not divide the {len(local)} devices of "
                            f"process {index}; use rollout.weights_layout=replicated or fsdp")
        groups += [local[i:i + tp] for i in range(0, len(local), tp)]
    return np.asarray(groups, dtype=object).reshape(len(groups), 1, tp)


def to_generation_layout(params, cfg: ModelConfig, mesh: Mesh):
    """`params` placed on `mesh` by the rules table: one reshard (XLA's all-gathers), not per token.

    The training params stay where they are; the result is a second copy (replicated: the
    whole model on every device) that the caller drops after the rollout.
    """
    shardings = tree_shardings(param_logical_axes(cfg), params, mesh)
    if all(getattr(x, "sharding", None) == s for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings))):
        return params
    return place(params, shardings)


def place(tree, shardings):
    """`tree` put at `shardings` device to device. Between two device sets that span
    several processes (a split's trainer and sampler groups) jax reshards only within one
    set, so each process copies its own whole replica between its own devices (nothing
    crosses hosts), onto the target's devices laid out host by host when the target
    splits a leaf across hosts, which one reshard within the target's devices then makes
    (a program of the target group). Every leaf of `tree` must be whole on each process
    (`host_replicas`), else a ValueError."""
    leaves, shards = jax.tree.leaves(tree), jax.tree.leaves(shardings)
    if all(x.is_fully_addressable for x in leaves) or all(x.sharding.device_set == s.device_set
                                                         for x, s in zip(leaves, shards)):
        return jax.device_put(tree, shardings)
    landing = [s if _whole(s, x.shape) else _by_host(s) for x, s in zip(leaves, shards)]
    local = [jax.make_array_from_single_device_arrays(x.shape, _host_part(x.sharding, x.shape),
                                                      [s.data for s in x.addressable_shards]) for x in leaves]
    moved = jax.device_put(local, [_host_part(s, x.shape) for x, s in zip(leaves, landing)])
    placed = [jax.make_array_from_single_device_arrays(x.shape, s, [p.data for p in m.addressable_shards])
              for x, s, m in zip(leaves, landing, moved)]
    if any(s is not t for s, t in zip(landing, shards)):
        placed = jax.device_put(placed, shards)
    return jax.tree.unflatten(jax.tree.structure(tree), placed)


def host_replicas(tree):
    """`tree` (NamedSharding leaves) with every leaf whole on each process: the leaves
    sharded across processes are resharded, within the same devices, onto those devices
    laid out host by host (dp across hosts, the leaf's own spec inside each host). One
    program of the trainer group, before a split's host-by-host copy (`place`); a no-op
    for leaves already whole on every process."""
    leaves = jax.tree.leaves(tree)
    if all(x.is_fully_addressable or _whole(x.sharding, x.shape) for x in leaves):
        return tree
    return jax.device_put(tree, jax.tree.map(lambda x: _by_host(x.sharding), tree))


def _whole(sharding, shape) -> bool:
    """Whether every process holds the whole of an array of `shape` at `sharding`."""
    return jax.sharding.NamedSharding(sharding.mesh.local_mesh, sharding.spec).shard_shape(shape) == \
        sharding.shard_shape(shape)


def _by_host(sharding):
    """`sharding`'s spec over its devices laid out host by host: [hosts, local // tp, tp]."""
    mesh = sharding.mesh
    hosts = by_process(mesh.devices.flat)
    local, tp = len(next(iter(hosts.values()))), mesh.shape["tp"]
    if local % tp:
        raise ValueError(f"tp={tp} does not divide the {local} devices each process has of mesh {dict(mesh.shape)}")
    shape = {"dp": len(hosts), "fsdp": local // tp, "tp": tp}
    return jax.sharding.NamedSharding(host_major_mesh(shape, [d for ds in hosts.values() for d in ds]), sharding.spec)


def _host_part(sharding, shape):
    """The part of a NamedSharding on this process's devices, which must hold the whole array."""
    if not _whole(sharding, shape):
        raise ValueError(f"an array of shape {shape} sharded as {sharding.spec} over mesh {dict(sharding.mesh.shape)} "
                         "is split across processes; only arrays whole on every process are copied host by host")
    return jax.sharding.NamedSharding(sharding.mesh.local_mesh, sharding.spec)


def bytes_per_device(tree) -> int:
    """Bytes one device holds of a tree of jax Arrays (its first addressable shard of each leaf)."""
    return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))
