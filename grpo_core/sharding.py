"""Device mesh and THE logical-axis -> mesh-axis rules table.

Arrays are described by logical axis names ("embed", "q_heads", "batch", ...; see
`grpo_core.models.decoder.param_logical_axes`); `LOGICAL_AXIS_RULES` below is the only
place that decides how those names map onto the mesh axes:

- "dp":   pure data parallelism (params replicated across it).
- "fsdp": data parallelism with params sharded along their "embed" axis (ZeRO-3 style);
          the batch is split over dp and fsdp together.
- "tp":   tensor parallelism over heads, MLP width and vocabulary.

Default mesh (`make_mesh(None)`): every device on "fsdp". On one host (v6e-8, a GPU box,
8 CPU devices in tests) that shards params, optimizer state and batch 8 ways with no
per-layer activation collectives beyond the param all-gathers, which is the right default
for models up to ~7B; ask for "tp" only when per-device batch gets too small.

A mesh axis is dropped from one dimension when it does not divide that dimension (e.g. 2
kv heads on tp=4, or odd test sizes): that dimension is then replicated on that axis
instead of failing, so any model runs on any mesh.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from grpo_core.errors import UserError

MESH_AXES = ("dp", "fsdp", "tp")

# logical axis name -> mesh axes (a name, a tuple of names, or None = replicated).
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("dp", "fsdp"),
    "seq": None,
    "layers": None,
    "vocab": "tp",
    "embed": "fsdp",
    "q_heads": "tp",
    "kv_heads": "tp",
    "head_dim": None,
    "mlp": "tp",
    "lora_rank": None,  # an adapter's rank: small, so A and B follow their weight's other axes
}


def make_mesh(shape: dict[str, int] | None = None, devices=None) -> Mesh:
    """Mesh with axes ("dp", "fsdp", "tp") over `devices` (default: all devices).

    shape: e.g. {"dp": 1, "fsdp": 4, "tp": 2}; missing axes are 1 and one axis may be -1
    (= whatever is left). None puts every device on "fsdp".
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_sizes(shape, len(devices))
    if devices[0].platform == "cpu":  # no topology: the plain order (what mesh_utils gives too)
        grid = np.asarray(devices).reshape(sizes)
    else:  # topology-aware device order on TPU/GPU (keeps tp neighbours close)
        # Splitting a physical axis is only tried when no whole-axis assignment exists (e.g.
        # a generation mesh dp=8 x tp=2 on v6e-16's 4x4 chips, grpo_core.layouts).
        grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES)


def by_process(devices) -> dict[int, list]:
    """Each process's devices in the order given, processes in index order."""
    hosts: dict[int, list] = {}
    for d in devices:
        hosts.setdefault(d.process_index, []).append(d)
    return dict(sorted(hosts.items()))


def host_major_mesh(shape: dict[str, int] | None, devices) -> Mesh:
    """A mesh of `shape` over `devices` in the order given (host by host), without
    mesh_utils' physical-block requirement."""
    devices = list(devices)
    return Mesh(np.asarray(devices, dtype=object).reshape(mesh_sizes(shape, len(devices))), MESH_AXES)


def mesh_sizes(shape: dict[str, int] | None, n_devices: int) -> tuple[int, ...]:
    shape = {"fsdp": -1} if shape is None else dict(shape)
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise UserError(f"mesh shape has unknown axes {sorted(unknown)}; use only {list(MESH_AXES)}.")
    sizes = [shape.get(a, 1) for a in MESH_AXES]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise UserError(f"mesh shape {shape} is invalid; give positive sizes and at most one -1.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes and n_devices % known == 0:
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise UserError(f"mesh shape {shape} does not use exactly the {n_devices} available devices; "
                        f"make the product of dp*fsdp*tp equal {n_devices}.")
    return tuple(sizes)


def logical_to_spec(names, shape=None, mesh: Mesh | None = None) -> PartitionSpec:
    """PartitionSpec for an array whose axes have logical `names` (tuple, None entries allowed).

    With `shape` and `mesh`, mesh axes that do not divide a dimension are dropped for it.
    A mesh axis is used by at most one dimension (the first that asks for it).
    """
    used, spec = set(), []
    for i, name in enumerate(names):
        rule = LOGICAL_AXIS_RULES.get(name) if name is not None else None
        axes = (rule,) if isinstance(rule, str) else tuple(rule or ())
        kept, size = [], 1
        for ax in axes:
            if ax in used:
                continue
            ax_size = mesh.shape[ax] if mesh is not None else 1
            if shape is not None and shape[i] % (size * ax_size):
                continue
            kept.append(ax)
            size *= ax_size
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, names, shape=None) -> NamedSharding:
    """NamedSharding for logical `names` (divisibility-checked against `shape` when given)."""
    return NamedSharding(mesh, logical_to_spec(names, shape, mesh))


def _is_names(x) -> bool:
    return isinstance(x, tuple) and all(n is None or isinstance(n, str) for n in x)


def tree_shardings(axes, tree, mesh: Mesh):
    """NamedSharding per leaf. axes: tree of name tuples; tree: same tree of arrays/ShapeDtypeStructs."""
    return jax.tree.map(lambda names, x: named_sharding(mesh, names, x.shape), axes, tree, is_leaf=_is_names)


def shard_params(params, axes, mesh: Mesh | None):
    """Place a params pytree on `mesh` by the rules table (None: leave as is)."""
    if mesh is None:
        return params
    shardings = tree_shardings(axes, params, mesh)
    if mesh.is_multi_process:
        # jax.device_put of a committed array onto devices of several processes gives an
        # array whose one local shard claims every device (jax 0.10: its addressable_shards
        # raise), so each process builds its shards from the host values instead.
        return jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, np.asarray(x).__getitem__),
                            params, shardings)
    return jax.device_put(params, shardings)


def constrain(x, names, mesh: Mesh | None):
    """Inside jit: pin array (or pytree with matching names tree) `x` to its logical sharding."""
    if mesh is None:
        return x
    return jax.tree.map(lambda n, a: jax.lax.with_sharding_constraint(a, named_sharding(mesh, n, a.shape)),
                        names, x, is_leaf=_is_names)


def batch_shards(mesh: Mesh | None) -> int:
    """How many ways the "batch" axis is split (batch sizes must be a multiple of this)."""
    if mesh is None:
        return 1
    rule = LOGICAL_AXIS_RULES["batch"]
    return math.prod(mesh.shape[a] for a in ((rule,) if isinstance(rule, str) else rule))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [B, ...] array: batch split over dp/fsdp, other axes replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1)))


def put_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Global array from host data that EVERY process holds in full (SPMD-style inputs)."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def fetch_global(x: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-process) global array on this host."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding (scalars, RNG keys, small tables)."""
    return NamedSharding(mesh, PartitionSpec())
