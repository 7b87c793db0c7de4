"""What several JAX processes must agree on, and how they agree.

Every process runs the same phases in lockstep. A phase that runs a collective
(rollout, update, eval) must be computed by all processes or by none, so cache hits are
decided together: a phase is reused only when every process has it. Host-side numbers
that differ per process (prompt widths, metrics of each shard) are combined here too.
All functions are cheap no-ops in a single-process run.

The numbers are exchanged through the distributed runtime's key-value store, not by a
device program: a program over every device would span both groups of a sampler/trainer
split and meet the sampler's programs in a different order on each host. Each kind of
exchange ("all", "max", "stats") is made by one thread, in the same order on every
process, so its n-th exchange has the same key everywhere.
"""
import logging
import threading

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


_EXCHANGE_TIMEOUT_MS = 7 * 24 * 3600 * 1000  # a hung peer is the phase watchdog's to report (tasks/watchdog.py)
_counts: dict[str, int] = {}
_counts_lock = threading.Lock()


def _gather(values: np.ndarray, kind: str) -> np.ndarray:
    """[process, ...] table of every process's `values` (same shape and dtype on all)."""
    from jax._src import distributed

    client = distributed.global_state.client
    with _counts_lock:
        n = _counts[kind] = _counts.get(kind, 0) + 1
    me, key = jax.process_index(), f"grpo-flows/agree/{kind}"
    client.key_value_set_bytes(f"{key}/{n}/{me}", np.ascontiguousarray(values).tobytes())
    rows = [np.frombuffer(client.blocking_key_value_get_bytes(f"{key}/{n}/{i}", _EXCHANGE_TIMEOUT_MS), values.dtype)
            for i in range(jax.process_count())]
    if n > 1:  # every process has read exchange n-1 before it wrote exchange n, which this one has read
        client.key_value_delete(f"{key}/{n - 1}/{me}")
    return np.stack(rows).reshape(len(rows), *values.shape)


def all_processes(flag: bool) -> bool:
    """True only when `flag` is True on every process (a collective: all must call it)."""
    if jax.process_count() == 1:
        return flag
    return bool(_gather(np.array([flag], np.int32), "all").min())


def global_max(value: int) -> int:
    if jax.process_count() == 1:
        return value
    return int(_gather(np.array([value], np.int64), "max").max())


def combine_stats(stats: dict[str, float]) -> dict[str, float]:
    """Per-shard statistics -> global ones. Shards hold equal row counts, so means average;
    *_max takes the max. (std is averaged too: an approximation documented in the metrics.)"""
    if jax.process_count() == 1:
        return stats
    names = sorted(k for k, v in stats.items() if isinstance(v, float) and k != "step")
    table = _gather(np.array([float(stats[k]) for k in names], np.float64), "stats")
    combined = {k: float(table[:, i].max() if k.endswith("_max") else table[:, i].mean()) for i, k in enumerate(names)}
    return {**stats, **combined}


def host_value(leaf) -> np.ndarray:
    """The full value of a (possibly multi-process sharded) array on this host."""
    if getattr(leaf, "is_fully_addressable", True):
        return np.asarray(jax.device_get(leaf))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
