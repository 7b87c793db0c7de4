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

import jax

from grpo_core.errors import UserError


def split_devices(sampler_devices: int, devices=None) -> tuple[list, list]:
    """(sampler devices, trainer devices) of `devices` (default: all); the same list twice
    when sampler_devices is 0 (no split)."""
    devices = list(jax.devices() if devices is None else devices)
    if not sampler_devices:
        return devices, devices
    if len({d.process_index for d in devices}) > 1:
        raise UserError(f"mesh.sampler_devices={sampler_devices} needs a single-process run; set it to 0 on "
                        "several hosts")
    if sampler_devices >= len(devices):
        raise UserError(f"mesh.sampler_devices={sampler_devices} leaves none of the {len(devices)} devices to train; "
                        f"use 1 to {len(devices) - 1}, or 0 for no split")
    return devices[:sampler_devices], devices[sampler_devices:]


def trainer_device_count(sampler_devices: int, device_count: int) -> int:
    """Devices the trainer group has (the batch is divided over them)."""
    return device_count - sampler_devices
