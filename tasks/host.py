"""Process-level settings for a training process's host memory.

glibc's malloc hands large freed blocks back to the kernel (munmap, heap trimming) and
maps them again on the next allocation, so every rollout/update cycle of a training
process - which frees and re-allocates the same few GB of XLA buffers each step - pays
page faults and page zeroing again, and on a VM with proactive memory reclaim those costs
can grow from step to step. Keeping the memory makes both phases of a GRPO step faster
on such a VM (benchmarks/RESULTS.md has the measurement).

`keep_freed_memory()` tells glibc to keep freed memory in the process: trim only past
2 GiB free, a 1 GiB pad on heap growth, and the largest allowed mmap threshold (32 MiB;
larger blocks are still mapped and unmapped). Peak RSS is unchanged (the same buffers
are live at the peak); freed memory mostly stays with the process between steps.
Set GRPO_KEEP_FREED_MEMORY=0 to leave malloc's defaults. Does nothing off glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's cap on 64-bit systems
_TOP_PAD = 1024 * 1024 * 1024
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True when glibc accepted them."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("GRPO_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt takes an int: the largest (2 GiB of free memory at the heap's top) is as close
    # to "never trim" as this call allows.
    _applied = all([mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1,
                    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1,
                    mallopt(_M_TOP_PAD, _TOP_PAD) == 1])
    return _applied
