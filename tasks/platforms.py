"""Which JAX platforms a `grpo` process brings up, decided before jax initialises.

With the `tpu` extra installed (libtpu, for `grpo preflight --compile`), JAX's first use
on a machine WITHOUT TPU chips still tries to start libtpu: about 2 s, and a screenful of
C++ warnings on stderr (no TPU_WORKER_HOSTNAMES, no accelerator type), before it falls
back to the CPU. On such a host every grpo command runs on the CPU anyway, so
`prefer_cpu_without_tpu()` says so (JAX_PLATFORMS=cpu) unless the user chose platforms
or a GPU plugin is installed. TPU VMs expose their chips as /dev/accel* (v4, v5p) or
/dev/vfio/N (v5e, v6e); there nothing changes.
"""
from __future__ import annotations

import glob
import importlib.util
import os

_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")


def has_tpu_chips() -> bool:
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def prefer_cpu_without_tpu(environ=os.environ) -> bool:
    """Set JAX_PLATFORMS=cpu when libtpu is installed but this host has no TPU chips (and no
    GPU plugin, and the user set no JAX_PLATFORMS). True when it did."""
    if "JAX_PLATFORMS" in environ or importlib.util.find_spec("libtpu") is None or has_tpu_chips():
        return False
    if any(importlib.util.find_spec(name) is not None for name in _GPU_PLUGINS):
        return False
    environ["JAX_PLATFORMS"] = "cpu"
    return True
