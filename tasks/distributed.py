"""JAX process bootstrap for multi-host runs (TPU slices, or N local processes).

Settings come from the config (`mesh.num_processes`, `mesh.coordinator_address`,
`mesh.process_id`) or, where the config leaves them null, from the environment
(GRPO_NUM_PROCESSES, GRPO_COORDINATOR_ADDRESS, GRPO_PROCESS_ID); on a TPU VM slice
jax discovers them itself. When the required number of processes does not join within
`mesh.init_timeout_s`, the run stops with one clear sentence and exit code 2, so that
launching only some workers of a slice (worker 0 of a v6e-16 alone would train on a
fraction of the chips) fails instead of running slowly. (jax's own timeout aborts the process from C++ with a stack dump,
so a watchdog thread fires first.)
"""
import os
import sys
import threading
from dataclasses import dataclass

_TPU_SLICE_ENV = ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


@dataclass(frozen=True)
class ProcessSettings:
    num_processes: int | None
    coordinator_address: str | None
    process_id: int | None
    timeout_s: int


def process_settings(mesh, env=os.environ) -> ProcessSettings | None:
    """The distributed settings to use, or None for a single-process run."""
    def pick(value, name, cast):
        return value if value is not None else (cast(env[name]) if env.get(name) else None)

    settings = ProcessSettings(
        num_processes=pick(mesh.num_processes, "GRPO_NUM_PROCESSES", int),
        coordinator_address=pick(mesh.coordinator_address, "GRPO_COORDINATOR_ADDRESS", str),
        process_id=pick(mesh.process_id, "GRPO_PROCESS_ID", int),
        timeout_s=mesh.init_timeout_s,
    )
    on_tpu_slice = any(env.get(name) for name in _TPU_SLICE_ENV)
    if settings.coordinator_address is None and not on_tpu_slice and (settings.num_processes or 1) == 1:
        return None
    return settings


def _give_up(settings: ProcessSettings) -> None:
    print(
        f"error: not all of the {settings.num_processes or 'expected'} JAX processes joined within "
        f"{settings.timeout_s} s (mesh.init_timeout_s); start every worker (on a TPU slice: --worker=all) with "
        "the same mesh.num_processes and coordinator address",
        file=sys.stderr, flush=True,
    )
    os._exit(2)


def initialize_processes(mesh, env=os.environ) -> None:
    """jax.distributed.initialize with a fail-fast watchdog; a no-op for single-process runs."""
    settings = process_settings(mesh, env)
    if settings is None:
        return
    import jax

    # Collectives between CPU devices of different processes (local multi-process runs);
    # set before initialize, which must come before any backend is touched.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watchdog = threading.Timer(settings.timeout_s, _give_up, args=(settings,))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator_address, num_processes=settings.num_processes,
            process_id=settings.process_id, initialization_timeout=settings.timeout_s + 60,
        )
    finally:
        watchdog.cancel()
    if settings.num_processes and jax.process_count() != settings.num_processes:
        _give_up(settings)
