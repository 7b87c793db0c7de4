"""The slice divided into a sampler group and a trainer group (mesh.sampler_devices).

Every process gives its first sampler_devices / processes local devices to the sampler
group and the rest to the trainer group, so on several hosts both groups span every
host and a tp group of the generation layout (built host by host: grpo_core.layouts)
never leaves one. The trainer group holds the params, the optimizer state and the
reference; the sampler group holds one copy of the params in the generation layout,
replaced after each update by a device-to-device reshard (`TrainSession.publish_params`).
With no split both groups are all devices and the sampler copy is made per rollout.
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
    hosts: dict[int, list] = {}
    for device in devices:
        hosts.setdefault(device.process_index, []).append(device)
    local = len(devices) // len(hosts)
    per_host, left = divmod(sampler_devices, len(hosts))
    if left or not 0 < per_host < local:
        raise UserError(
            f"mesh.sampler_devices={sampler_devices} must split the same number of devices off each of the "
            f"{len(hosts)} hosts and leave the trainer some: use a multiple of {len(hosts)} below {len(devices)} "
            "(or 0 for no split)")
    sampler = [d for host in hosts.values() for d in host[:per_host]]
    trainer = [d for host in hosts.values() for d in host[per_host:]]
    return sampler, trainer


def trainer_device_count(sampler_devices: int, device_count: int) -> int:
    """Devices the trainer group has (the batch is divided over them)."""
    return device_count - sampler_devices
