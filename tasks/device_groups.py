"""The slice divided into a sampler group and a trainer group (mesh.sampler_devices).

The first sampler_devices devices sample, the rest train. With several processes (a
slice of several hosts) every host gives the same number of its own devices to each
group (sampler_devices / processes to sampling): both groups span every host, so a
host's sampler and trainer devices are its own and a group never splits a tp group
across hosts. The trainer group holds the params, the optimizer state and the reference;
the sampler group holds one copy of the params in the generation layout, replaced after
each update by a device-to-device reshard (`TrainSession.publish_params`; with several
processes each host copies its own replica between its own devices: params that the
trainer's mesh splits across hosts are gathered into one replica per host on the trainer
group first, and the sampler group reshards its copy onto its own layout after,
grpo_core.layouts.place). With no split
both groups are all devices and the sampler copy is made per rollout.

What several processes agree on (tasks/multihost.py) goes through the distributed
runtime's key-value store, not through device programs, so no program spans both groups
but the params transfer, whose place in both groups' orders is fixed (tasks/dispatch.py).
"""
from __future__ import annotations

import os

from grpo_core.errors import UserError
from grpo_core.sharding import by_process, host_major_mesh
from tasks.multihost import auto_mesh_shape, warn_if_fsdp_spans_hosts


def split_devices(sampler_devices: int, devices=None) -> tuple[list, list]:
    """(sampler devices, trainer devices) of `devices` (default: all); the same list twice
    when sampler_devices is 0 (no split). With several processes each takes
    sampler_devices / processes of its own devices (the first, in chip order) to sample."""
    import jax

    devices = list(jax.devices() if devices is None else devices)
    if not sampler_devices:
        return devices, devices
    hosts = by_process(devices)
    check_split(sampler_devices, len(devices), len(hosts))
    if len(hosts) == 1:
        return devices[:sampler_devices], devices[sampler_devices:]
    per_host = sampler_devices // len(hosts)
    if getattr(devices[0], "coords", None) is None:  # no chip grid (CPU): each host's first devices
        local = [sorted(ds, key=_chip_order) for ds in hosts.values()]
        return [d for ds in local for d in ds[:per_host]], [d for ds in local for d in ds[per_host:]]
    sampler = torus_slab(devices, per_host)
    if sampler is None:
        raise UserError(f"mesh.sampler_devices={sampler_devices}: no slab of the slice's chip grid holds "
                        f"{per_host} chips of every host, so the two groups cannot both be blocks of the grid; "
                        "use a multiple of the process count whose share per host is a whole row or column of "
                        "its chips (e.g. half of them), or 0 for no split")
    chosen, ordered = {d.id for d in sampler}, [d for ds in hosts.values() for d in sorted(ds, key=_chip_order)]
    return [d for d in ordered if d.id in chosen], [d for d in ordered if d.id not in chosen]


def grid_chips(grid: tuple[int, ...], host_bounds: tuple[int, ...]) -> list:
    """Stand-ins for a TPU slice's chips (id, coords, process_index) from its grid ("4x4")
    and the chips per host along each axis, in jax's order (host by host): what
    `split_devices` needs to decide a split for a slice that is not here (grpo preflight)."""
    from types import SimpleNamespace

    grid = tuple(grid) + (1,) * (3 - len(grid))
    host_grid = [g // b for g, b in zip(grid, host_bounds)]
    chips = []
    for x, y, z in _coords(grid):
        host = (x // host_bounds[0]) + host_grid[0] * ((y // host_bounds[1]) + host_grid[1] * (z // host_bounds[2]))
        chips.append(SimpleNamespace(id=len(chips), coords=(x, y, z), process_index=host, platform="tpu"))
    return sorted(chips, key=lambda c: (c.process_index, c.id))


def _coords(grid):
    return [(x, y, z) for z in range(grid[2]) for y in range(grid[1]) for x in range(grid[0])]


def torus_slab(devices: list, per_host: int) -> list | None:
    """The chips of a slab of the chip grid (a run of whole planes along one axis, which
    may wrap around the torus) holding `per_host` chips of every host, or None. The rest
    of the grid is then a slab too, so both groups are blocks of the torus: what libtpu
    compiles a program of several hosts for (rows 1-2 and rows 3,0 of v6e-16's 4x4 grid
    compile; rows 0 and 2 abort its compiler)."""
    dims = [max(d.coords[a] for d in devices) + 1 for a in range(len(devices[0].coords))]
    hosts = by_process(devices)
    for axis, size in enumerate(dims):
        for width in range(1, size):
            for start in range(size):
                slab = [d for d in devices if (d.coords[axis] - start) % size < width]
                if all(sum(d.process_index == h for d in slab) == per_host for h in hosts):
                    return slab
    return None


def _chip_order(device):
    return tuple(reversed(getattr(device, "coords", ()) or ())), device.id


def check_split(sampler_devices: int, device_count: int, num_processes: int = 1) -> None:
    """A UserError when a split of `device_count` devices over `num_processes` processes
    cannot be made (no device left to train, or hosts that would give unequal shares)."""
    if not sampler_devices:
        return
    if sampler_devices >= device_count:
        raise UserError(f"mesh.sampler_devices={sampler_devices} leaves none of the {device_count} devices to train; "
                        f"use 1 to {device_count - 1}, or 0 for no split")
    if sampler_devices % num_processes:
        raise UserError(f"mesh.sampler_devices={sampler_devices} is not a multiple of the {num_processes} processes "
                        "(every host gives the same number of its devices to sampling); use a multiple of "
                        f"{num_processes}, e.g. {num_processes * max(1, sampler_devices // num_processes)}")


def check_cpu_concurrency(sampler: list, trainer: list, cores: int | None = None) -> None:
    """A UserError for a split of several CPU processes whose two groups could hold more
    device programs at once than XLA:CPU runs at once in a process.

    XLA:CPU runs each device's part of a program on a pool of workers, one per core. With
    two dispatch threads the processes start the two groups' programs in different
    orders, and a process whose workers all wait in one group's collective never starts
    the other group's part that another process waits for (measured: 2 processes x 2+2
    devices on 2 cores hang in gloo; 1+1 run side by side). TPUs and GPUs run each
    device's programs on that device, so the rule is for CPU meshes only."""
    if sampler is trainer or sampler[0].platform != "cpu":
        return
    hosts = by_process(sampler + trainer)
    if len(hosts) == 1:
        return
    cores = cores or len(os.sched_getaffinity(0))
    local = len(hosts[sampler[0].process_index])
    if local > cores:
        raise UserError(f"mesh.sampler_devices={len(sampler)}: with several CPU processes each process runs both "
                        f"groups' programs at once, and its {local} devices are more than its {cores} cores can run "
                        f"at once (they would wait on each other); give each process at most {cores} host devices "
                        "(--xla_force_host_platform_device_count)")


def trainer_device_count(sampler_devices: int, device_count: int) -> int:
    """Devices the trainer group has (the batch is divided over them)."""
    return device_count - sampler_devices


def derive_trainer_batch(cfg, num_processes: int, device_count: int):
    """The run's DerivedBatch on `device_count` devices: the batch is divided over the
    trainer group's devices (all of them with no split). What `grpo train`, `grpo
    print-config --devices` and `grpo preflight` derive."""
    check_split(cfg.mesh.sampler_devices, device_count, num_processes)
    return cfg.derive(num_processes, trainer_device_count(cfg.mesh.sampler_devices, device_count))


def split_meshes(sampler: list, trainer: list, trainer_shape: dict | None, sampler_shape: dict | None):
    """(trainer mesh, sampler mesh) of a split (the two device lists of `split_devices`):
    each group's mesh over its own devices. In one process, on a TPU slice, a mesh needs
    its chips to form a block of the chip grid; a split whose groups do not is a
    UserError. A group of several processes is laid out host by host (each host's devices
    in chip order, as `split_devices` chose them; the outermost axis across hosts)."""
    from grpo_core.sharding import make_mesh

    if len(by_process(sampler)) > 1:
        return host_major_mesh(trainer_shape, trainer), host_major_mesh(sampler_shape, sampler)
    try:
        return make_mesh(trainer_shape, trainer), make_mesh(sampler_shape, sampler)
    except AssertionError:  # jax's mesh_utils: the devices are not a block of the physical grid
        raise UserError(f"mesh.sampler_devices={len(sampler)}: the first {len(sampler)} chips and the other "
                        f"{len(trainer)} do not both form a block of the slice's chip grid, so no mesh can be built "
                        "on them; choose a split whose two groups are blocks (e.g. half the chips)") from None


def run_meshes(cfg, hosts: int, sampler: list, trainer: list):
    """(the update's mesh, the sampler group's mesh) over the two device lists of
    `split_devices` (the same list twice with no split): what a run trains and samples on,
    and what `grpo preflight --compile` compiles for a slice's chips."""
    from grpo_core.sharding import make_mesh

    trainer_shape = mesh_shape(cfg, hosts, len(trainer) // hosts)
    if sampler is trainer:
        mesh = make_mesh(trainer_shape, trainer)
        return mesh, mesh
    check_cpu_concurrency(sampler, trainer)
    tp, trainer_local = (trainer_shape or {}).get("tp", 1), len(trainer) // hosts
    if hosts > 1 and trainer_local % tp:
        raise UserError(f"mesh.shape tp={tp} does not divide the {trainer_local} trainer devices of each host, so a "
                        f"tp group would span hosts; with mesh.sampler_devices={len(sampler)} on {hosts} hosts use a tp "
                        f"that divides {trainer_local}")
    # The sampler group: fsdp over all its devices, on several hosts too (a decode step reads
    # each chip's share of the weights; dp across hosts would give each chip a host's share).
    return split_meshes(sampler, trainer, trainer_shape, None)


def mesh_shape(cfg, num_processes: int, local_devices: int) -> dict | None:
    """The run's mesh axes: mesh.shape=auto is dp over processes, fsdp over each one's devices."""
    if cfg.mesh.shape == "auto":
        return auto_mesh_shape(num_processes, local_devices)
    shape = cfg.mesh.shape.model_dump()
    warn_if_fsdp_spans_hosts(shape, local_devices)
    return shape
