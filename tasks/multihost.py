"""What several JAX processes must agree on, and the collectives that make them agree.

Every process runs the same phases in lockstep. A phase that runs a collective
(rollout, update, eval) must be computed by all processes or by none, so cache hits are
decided together: a phase is reused only when every process has it. Host-side numbers
that differ per process (prompt widths, metrics of each shard) are combined here too.
All functions are cheap no-ops in a single-process run.
"""
import logging

import jax
import numpy as np

logger = logging.getLogger("grpo_flows.multihost")


def auto_mesh_shape(num_processes: int, local_devices: int) -> dict | None:
    """mesh.shape=auto: dp across processes, fsdp across each process's devices."""
    if num_processes == 1:
        return None
    return {"dp": num_processes, "fsdp": local_devices, "tp": 1}


def warn_if_fsdp_spans_hosts(shape: dict, local_devices: int) -> None:
    if shape["fsdp"] * shape["tp"] > local_devices:
        logger.warning(
            "mesh.shape fsdp*tp=%d exceeds the %d devices of one host: parameter all-gathers will cross "
            "the slower inter-host links; prefer dp across hosts", shape["fsdp"] * shape["tp"], local_devices)


def _gather(values: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values))


def all_processes(flag: bool) -> bool:
    """True only when `flag` is True on every process (a collective: all must call it)."""
    if jax.process_count() == 1:
        return flag
    return bool(_gather(np.array([flag], np.int32)).min())


def global_max(value: int) -> int:
    if jax.process_count() == 1:
        return value
    return int(_gather(np.array([value], np.int64)).max())


def combine_stats(stats: dict[str, float]) -> dict[str, float]:
    """Per-shard statistics -> global ones. Shards hold equal row counts, so means average;
    *_max takes the max. (std is averaged too: an approximation documented in the metrics.)"""
    if jax.process_count() == 1:
        return stats
    names = sorted(k for k, v in stats.items() if isinstance(v, float) and k != "step")
    table = _gather(np.array([float(stats[k]) for k in names], np.float64))
    combined = {k: float(table[:, i].max() if k.endswith("_max") else table[:, i].mean()) for i, k in enumerate(names)}
    return {**stats, **combined}


def host_value(leaf) -> np.ndarray:
    """The full value of a (possibly multi-process sharded) array on this host."""
    if getattr(leaf, "is_fully_addressable", True):
        return np.asarray(jax.device_get(leaf))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
