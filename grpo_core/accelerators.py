"""The accelerator table: TPU slices and GPUs, their chips, hosts, HBM and (TPU) topology.

`grpo preflight` and the memory estimate (grpo_core.memory) size a run for one of these;
libtpu's compile-only client builds a slice from its topology (grpo_core.aot); the decode
rates rank generation layouts (grpo_core.layout_choice).
"""
from __future__ import annotations

import dataclasses

from grpo_core.errors import UserError

GIB = 1024**3
# Per chip, from Google's Cloud TPU pages (read 2026-11-29): HBM bandwidth and the ICI
# bandwidth one chip receives (half the bidirectional figure: v6e 800 GB/s, v5e 400 GB/s,
# v5p 4,800 Gbps). Used only to rank generation layouts (choose_weights_layout).
DECODE_RATES = {"v6e": (1638e9, 400e9), "v5e": (819e9, 200e9), "v5": (2765e9, 300e9)}


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One slice type: chips (= JAX devices) and hosts per slice, HBM per chip, and for TPUs
    the topology libtpu's compile-only client builds the slice from (grpo_core.aot)."""

    name: str
    kind: str  # "tpu" | "gpu"
    chips: int
    hosts: int
    hbm_gib: float
    reserved_gib: float = 0.0
    usable_fraction: float = 1.0
    topology: str = ""  # e.g. "v6e:2x4"
    chip_config: str = "default"
    host_bounds: tuple[int, int, int] = (1, 1, 1)

    @property
    def capacity_bytes(self) -> int:
        """Bytes one device can give our buffers."""
        return int((self.hbm_gib * self.usable_fraction - self.reserved_gib) * GIB)


# 2D slices (v5e, v6e): chips -> topology; a single host holds up to 8 chips, hosts of
# multi-host slices 4 (2x2). 3D slices (v4, v5p): names count TensorCores (2 per chip, one
# JAX device per chip in megacore mode), 4 chips per host.
_GRID_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_GRID_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8"}


def _tpu_2d(prefix: str, generation: str, hbm_gib: float) -> list[Accelerator]:
    out = []
    for chips, grid in _GRID_2D.items():
        hosts = 1 if chips <= 8 else chips // 4
        bounds = {1: (1, 1, 1), 4: (2, 2, 1), 8: (2, 4, 1)}.get(chips, (2, 2, 1))
        # v6e reports bytes_limit = 31.25 GiB of its 32 GiB; the same reservation is assumed elsewhere.
        out.append(Accelerator(f"{prefix}-{chips}", "tpu", chips, hosts, hbm_gib, reserved_gib=0.75,
                               topology=f"{generation}:{grid}", host_bounds=bounds))
    return out


def _tpu_3d(prefix: str, generation: str, hbm_gib: float) -> list[Accelerator]:
    return [Accelerator(f"{prefix}-{2 * chips}", "tpu", chips, max(1, chips // 4), hbm_gib, reserved_gib=0.75,
                        topology=f"{generation}:{grid}", chip_config="megacore", host_bounds=(2, 2, 1))
            for chips, grid in _GRID_3D.items()]


def _gpu(name, chips, hbm_gib) -> Accelerator:
    return Accelerator(name, "gpu", chips, 1, hbm_gib, usable_fraction=0.75)


ACCELERATORS: dict[str, Accelerator] = {a.name: a for a in (
    *_tpu_3d("v4", "v4", 32), *_tpu_2d("v5litepod", "v5e", 16), *_tpu_3d("v5p", "v5", 95),
    *_tpu_2d("v6e", "v6e", 32),
    _gpu("h100", 1, 79.6), _gpu("h100-8", 8, 79.6), _gpu("h200", 1, 140.4), _gpu("h200-8", 8, 140.4),
)}
# Cloud TPU's own names for v5e slices are v5litepod-N; "v5e-N" is what people type.
_ALIASES = {f"v5e-{a.chips}": a.name for a in ACCELERATORS.values() if a.name.startswith("v5litepod-")}


def get_accelerator(name: str) -> Accelerator:
    """Table entry for `name` (case-insensitive), or a UserError listing the known names."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in ACCELERATORS:
        tpus = sorted({a.name.rsplit("-", 1)[0] for a in ACCELERATORS.values() if a.kind == "tpu"})
        raise UserError(
            f"unknown accelerator {name!r}; use a TPU slice {'/'.join(tpus)} (or v5e) with its size, e.g. "
            f"v6e-8, v6e-16, v5e-8, v5p-8, v4-8, or a GPU: "
            f"{', '.join(a.name for a in ACCELERATORS.values() if a.kind == 'gpu')}")
    return ACCELERATORS[key]


def tpu_generation(device_kind: str) -> str:
    """The topology prefix of a TPU's jax device_kind ("TPU v6 lite" -> "v6e"; "" if unknown)."""
    kind = device_kind.lower().replace("tpu", "").strip()
    return {"v6 lite": "v6e", "v6e": "v6e", "v5 lite": "v5e", "v5e": "v5e", "v5": "v5", "v5p": "v5",
            "v4": "v4"}.get(kind, "")


def decode_rates(acc: Accelerator) -> tuple[float, float] | None:
    """(HBM, ICI received) bytes/s per chip of `acc`'s TPU generation; None where not tabled."""
    return DECODE_RATES.get(acc.topology.split(":")[0]) if acc.kind == "tpu" else None
