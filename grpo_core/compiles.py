"""The compile budget: which XLA programs a run compiles, in which phase, and at what cost;
and the persistent compilation cache those programs are kept in.

On a TPU every new input shape of the sampler or the update is a compile of minutes, so
a run should compile few programs and say how many. jax reports each backend compile
(or persistent-cache load) as a monitoring event with the program's name; a listener
installed once per process appends it to `COMPILES`, labelled with the phase that was
running in that thread (`in_phase`). Events from other threads (orbax's) and outside
any phase are labelled "other". Counting events rather than jitted functions' cache
sizes also counts the small eager programs a first step compiles.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from collections import Counter

from jax import monitoring
from jax.experimental.compilation_cache import compilation_cache

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_PHASE = contextvars.ContextVar("grpo_compile_phase", default="other")


@dataclasses.dataclass(frozen=True)
class Compile:
    phase: str
    program: str  # jax's name for it, e.g. jit_train_step, jit__generate_impl
    seconds: float
    from_cache: bool  # loaded from the persistent compilation cache instead of compiled


COMPILES: list[Compile] = []
_installed = False
_lock = threading.Lock()
_hit = threading.local()  # the cache-hit event precedes its compile event in the same thread


def _on_event(event: str, **_) -> None:
    if event == _CACHE_HIT:
        _hit.pending = True


def _on_duration(event: str, seconds: float, **kwargs) -> None:
    if event != _BACKEND_COMPILE:
        return
    from_cache, _hit.pending = getattr(_hit, "pending", False), False
    COMPILES.append(Compile(_PHASE.get(), str(kwargs.get("fun_name", "?")), float(seconds), from_cache))


def install() -> None:
    """Start recording compiles (once per process)."""
    global _installed
    with _lock:
        if not _installed:
            monitoring.register_event_listener(_on_event)
            monitoring.register_event_duration_secs_listener(_on_duration)
            _installed = True


@contextlib.contextmanager
def in_phase(name: str):
    """Label compiles in this thread (and the tasks it awaits) with phase `name`."""
    token = _PHASE.set(name)
    try:
        yield
    finally:
        _PHASE.reset(token)


def mark() -> int:
    """A position in `COMPILES`; `since(mark)` lists what came after it."""
    return len(COMPILES)


def since(position: int) -> list[Compile]:
    return COMPILES[position:]


def by_phase(compiles: list[Compile]) -> dict[str, dict]:
    """{phase: {"compiles", "from_cache", "seconds", "programs": {name: count}}}."""
    table: dict[str, dict] = {}
    for c in compiles:
        row = table.setdefault(c.phase, {"compiles": 0, "from_cache": 0, "seconds": 0.0, "programs": Counter()})
        row["compiles"] += 1
        row["from_cache"] += int(c.from_cache)
        row["seconds"] += c.seconds
        row["programs"][c.program] += 1
    return {phase: dict(row, programs=dict(row["programs"])) for phase, row in sorted(table.items())}


def persistent_cache_safe(mesh) -> bool:
    """Whether programs compiled for `mesh`'s devices may be loaded from the persistent cache.

    Not on a CPU mesh of several devices. XLA:CPU runs a program's thunks as a dependency
    graph; a freshly compiled program's collectives all write one shared "communicator"
    resource, which orders them the same way on every device. jaxlib's deserializer
    rebuilds that resource per thunk sequence, so a program loaded from the cache keeps
    no order between the collectives inside a while loop (a decode loop, the update's
    micro-batch loop) and those outside it: each device may enter a different one, and
    XLA's rendezvous aborts after its timeout (a TPU would hang). SmolLM2's update on 2 CPU
    devices, run on one thread, passes when compiled and aborts every time when loaded
    from the cache. TPU and GPU programs keep the cache.
    """
    devices = mesh.devices.flat
    return devices[0].platform != "cpu" or mesh.devices.size == 1


def use_cache_dir(path: str | None) -> None:
    """Keep compiled programs in `path` (a folder or a gs:// path) across processes; None: off.

    jax opens its cache at the first compile after the folder is set; resetting it first
    lets a second run in the same process use its own folder.
    """
    from jax import config

    if config.jax_compilation_cache_dir == path:
        return
    compilation_cache.reset_cache()
    compilation_cache.set_cache_dir(path)
