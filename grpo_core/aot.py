"""Compile a run's programs for a TPU slice ahead of time, on a host that has no TPU.

libtpu ships a compile-only client: `jax.experimental.topologies.get_topology_desc`
describes a slice's devices from its topology name; a Mesh over those devices and
abstract inputs (ShapeDtypeStructs carrying the run's NamedShardings) let
`jit(f).lower(...).compile()` run XLA's own TPU compiler here, the way MaxText's
train_compile and axlearn's AOT check do. `compiled.memory_analysis()` then gives XLA's
per-device buffer sizes, which is the authority the analytic estimate
(grpo_core.memory) is calibrated against.

The programs are the run's own: the sampler (`grpo_core.sampling.lower_generate`) and the
train step (`Trainer.lower`), with the same static settings, shardings and worst-case
shapes. This module only builds abstract inputs and reads XLA's answers; it never sets
the environment (flows/compile_check.py does: libtpu must not probe for hardware).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from grpo_core.artifacts import atomic_write_bytes
from grpo_core.memory import Accelerator
from grpo_core.models.config import ModelConfig
from grpo_core.models.decoder import param_logical_axes, param_shapes
from grpo_core.sharding import batch_sharding, tree_shardings

# The train step's batch (grpo_core.phases.update_batch): [B, T] int32 arrays and [B] advantages.
_BATCH_INT_KEYS = ("tokens_bt", "positions_bt", "attn_mask_bt", "completion_mask_bt")
# XLA:TPU's compile-time OOM, in either of its wordings: "... Used 40.50G of 31.25G hbm ..." or
# "Ran out of memory on HBM, the total memory required for HLO temporaries (60.73G) exceeds ...".
_USED_RE = re.compile(r"(?:Used |required for HLO temporaries \()([0-9.]+)([KMGT])")
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def topology_devices(acc: Accelerator) -> list:
    """The slice's devices as libtpu's compile-only client describes them (all hosts)."""
    from jax.experimental import topologies

    topo = topologies.get_topology_desc(
        platform="tpu", topology_name=acc.topology, chip_config_name=acc.chip_config,
        chips_per_host_bounds=acc.host_bounds, num_slices=1)
    return list(topo.devices)


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
    """XLA's bytes per device for one compiled program, plus state resident beside it.

    resident: bytes that live on the device during the program without being its
    arguments (the optimizer state and reference params during rollout and eval).
    """

    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    code: int
    resident: int = 0

    @property
    def total(self) -> int:
        """Peak bytes per device: inputs, outputs not aliased onto inputs, scratch, code."""
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code + self.resident

    @classmethod
    def of(cls, compiled, resident: int = 0) -> "ProgramMemory":
        m = compiled.memory_analysis()
        return cls(m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                   m.temp_size_in_bytes, m.generated_code_size_in_bytes, resident)


@dataclasses.dataclass
class CompiledPhase:
    """One phase's compile: XLA's memory, or the error XLA gave (oom: it ran out of HBM)."""

    phase: str
    seconds: float
    memory: ProgramMemory | None = None
    error: str | None = None
    oom: bool = False
    cached: bool = False
    flops: float | None = None  # XLA's cost analysis: loop bodies (layers, micro-batches) counted once
    # For a cached answer: how long XLA took when it compiled the program (None for answers
    # stored without it); for a fresh compile, `seconds`.
    xla_seconds: float | None = None

    @property
    def xla_bytes(self) -> int | None:
        """XLA's per-device total; for an out-of-memory compile, the bytes its message names
        (all buffers, or the temporaries alone, by the wording: a lower bound either way)."""
        if self.memory is not None:
            return self.memory.total
        match = _USED_RE.search(self.error or "")
        return int(float(match[1]) * _UNITS[match[2]]) if match else None


def compile_phase(phase: str, lower, resident: int = 0, store: "ResultStore | None" = None) -> CompiledPhase:
    """Lower with `lower()` -> jax Lowered and compile; XLA's errors become data, not exceptions.

    With a `store`, a program compiled before (same lowered program, same compiler) is
    answered from it without compiling again.
    """
    started = time.perf_counter()
    lowered = lower()
    key = store.key(lowered) if store is not None else None
    if key is not None and (known := store.get(key)) is not None:
        memory = known.get("memory") and dataclasses.replace(known["memory"], resident=resident)
        return CompiledPhase(phase, time.perf_counter() - started, memory, known.get("error"),
                             known.get("oom", False), cached=True, flops=known.get("flops"),
                             xla_seconds=known.get("compile_seconds"))
    try:
        compiled = lowered.compile()
        memory, flops = ProgramMemory.of(compiled, resident), _flops(compiled)
    except Exception as exc:  # XLA's compile errors are plain runtime errors carrying its message
        message = str(exc)
        oom = "RESOURCE_EXHAUSTED" in message or "Ran out of memory" in message
        seconds = time.perf_counter() - started
        if oom and key is not None:
            store.put(key, {"error": message, "oom": True, "compile_seconds": round(seconds, 1)})
        return CompiledPhase(phase, seconds, error=message, oom=oom, xla_seconds=seconds)
    seconds = time.perf_counter() - started
    if key is not None:
        store.put(key, {"memory": dataclasses.asdict(memory) | {"resident": 0}, "flops": flops,
                        "compile_seconds": round(seconds, 1)})
    return CompiledPhase(phase, seconds, memory, flops=flops, xla_seconds=seconds)


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    return float(cost["flops"]) if isinstance(cost, dict) and "flops" in cost else None


class ResultStore:
    """XLA's answers (memory analysis, or its out-of-memory error) per compiled program.

    JAX's persistent compilation cache stores executables, which libtpu's compile-only
    client cannot load back ("PjRtCompiler must be constructed with a Client to call
    DeserializeLoadedExecutable", checked with jax 0.10.2 / libtpu 0.0.42.1), so a second
    preflight would compile everything again. What a preflight needs is much smaller: the
    figures, keyed by the lowered program's text (shapes, shardings, every op) and the
    compiler (`compiler_id`: jax and libtpu versions, the topology).
    """

    def __init__(self, directory, compiler_id: str):
        self.directory, self.compiler_id = Path(directory), compiler_id

    def key(self, lowered) -> str:
        digest = hashlib.sha256(self.compiler_id.encode())
        digest.update(lowered.as_text().encode())
        return digest.hexdigest()

    def get(self, key: str) -> dict | None:
        path = self.directory / f"{key}.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        if "memory" in data:
            data["memory"] = ProgramMemory(**data["memory"])
        return data

    def put(self, key: str, value: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.directory / f"{key}.json", json.dumps(value).encode())


def abstract_params(cfg: ModelConfig, dtype, mesh):
    """ShapeDtypeStructs of the params in `dtype`, sharded over `mesh` by the rules table."""
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, dtype), param_shapes(cfg),
                          is_leaf=lambda x: isinstance(x, tuple))
    shardings = tree_shardings(param_logical_axes(cfg), shapes, mesh)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def abstract_update_batch(rows: int, width: int, mesh, sampler_logps: bool = False) -> dict:
    """The train step's global batch: `rows` sequences of `width` tokens, split over the batch
    axes (with the rollout's log-probs when truncated importance sampling reads them)."""
    batch = {k: jax.ShapeDtypeStruct((rows, width), jnp.int32, sharding=batch_sharding(mesh, 2))
             for k in _BATCH_INT_KEYS}
    if sampler_logps:
        batch["sampler_logps_bt"] = jax.ShapeDtypeStruct((rows, width), jnp.float32, sharding=batch_sharding(mesh, 2))
    batch["advantages_b"] = jax.ShapeDtypeStruct((rows,), jnp.float32, sharding=batch_sharding(mesh, 1))
    return batch


def resident_bytes(tree) -> int:
    """Bytes per device XLA gives `tree` (abstract, sharded) as it lays it out on the device
    (TPU tiles included): the argument size of a program that only passes it through."""
    if not jax.tree.leaves(tree):
        return 0
    compiled = jax.jit(lambda t: t, donate_argnums=0).lower(tree).compile()
    return compiled.memory_analysis().argument_size_in_bytes
