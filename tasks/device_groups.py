"""The slice divided into a sampler group and a trainer group (mesh.sampler_devices).

The first sampler_devices devices sample, the rest train. The trainer group holds the
params, the optimizer state and the reference; the sampler group holds one copy of the
params in the generation layout, replaced after each update by a device-to-device
reshard (`TrainSession.publish_params`). With no split both groups are all devices and
the sampler copy is made per rollout.

A split needs a single process: the collectives by which several processes agree on
cache hits and batch widths (tasks/multihost.py) run over every device of the slice, and
with the groups running side by side they would meet the sampler's programs in a
different order on each host.
"""
from __future__ import annotations

from grpo_core.errors import UserError


def split_devices(sampler_devices: int, devices=None) -> tuple[list, list]:
    """(sampler devices, trainer devices) of `devices` (default: all); the same list twice
    when sampler_devices is 0 (no split)."""
    import jax

    devices = list(jax.devices() if devices is None else devices)
    if not sampler_devices:
        return devices, devices
    check_split(sampler_devices, len(devices), len({d.process_index for d in devices}))
    return devices[:sampler_devices], devices[sampler_devices:]


def check_split(sampler_devices: int, device_count: int, num_processes: int = 1) -> None:
    """A UserError when a split of `device_count` devices over `num_processes` processes
    cannot be made (a run of several processes, or no device left to train)."""
    if not sampler_devices:
        return
    if num_processes > 1:
        raise UserError(f"mesh.sampler_devices={sampler_devices} needs a single-process run; set it to 0 on "
                        "several hosts")
    if sampler_devices >= device_count:
        raise UserError(f"mesh.sampler_devices={sampler_devices} leaves none of the {device_count} devices to train; "
                        f"use 1 to {device_count - 1}, or 0 for no split")


def trainer_device_count(sampler_devices: int, device_count: int) -> int:
    """Devices the trainer group has (the batch is divided over them)."""
    return device_count - sampler_devices


def derive_trainer_batch(cfg, num_processes: int, device_count: int):
    """The run's DerivedBatch on `device_count` devices: the batch is divided over the
    trainer group's devices (all of them with no split). What `grpo train`, `grpo
    print-config --devices` and `grpo preflight` derive."""
    check_split(cfg.mesh.sampler_devices, device_count, num_processes)
    return cfg.derive(num_processes, trainer_device_count(cfg.mesh.sampler_devices, device_count))


def split_meshes(sampler: list, trainer: list, trainer_shape: dict, sampler_shape: dict):
    """(trainer mesh, sampler mesh) of a split (the two device lists of `split_devices`):
    each group's mesh over its own devices. On a TPU slice a mesh needs its chips to form a
    block of the chip grid; a split whose groups do not is a UserError."""
    from grpo_core.sharding import make_mesh

    try:
        return make_mesh(trainer_shape, trainer), make_mesh(sampler_shape, sampler)
    except AssertionError:  # jax's mesh_utils: the devices are not a block of the physical grid
        raise UserError(f"mesh.sampler_devices={len(sampler)}: the first {len(sampler)} chips and the other "
                        f"{len(trainer)} do not both form a block of the slice's chip grid, so no mesh can be built "
                        "on them; choose a split whose two groups are blocks (e.g. half the chips)") from None
