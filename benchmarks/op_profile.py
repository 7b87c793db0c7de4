"""Where the time goes: the XLA ops (CPU thunks or GPU kernels) that take longest in a call.

Runs `fn` once untimed, then `reps` times under `jax.profiler`, reads the Perfetto trace
JAX writes (no TensorBoard plugin needed) and sums the duration of every complete event
per name. Runtime bookkeeping events (thunk executor, Python frames) are left out, so
what remains are the compiled program's own ops.

    from benchmarks.op_profile import top_ops
    rows = top_ops(lambda: step().block_until_ready(), reps=3)
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import tempfile

import jax

# Events that wrap or wait on the ops rather than being ops themselves.
_SKIP_PREFIXES = ("ThunkExecutor", "$", "Slinky", "Pjit", "Common", "end: ", "PjRt", "Handle ", "Parse",
                  "Allocate", "Wait for", "PythonRefManager", "TfrtCpu", "cuStream", "cuEvent", "cuLaunch",
                  "cuMem", "cudaLaunch", "cuCtx", "StreamExecutor", "Execute", "TraceMe", "Threadpool")


def trace_events(fn, reps: int = 3) -> list[dict]:
    """The Perfetto trace events of `reps` calls of `fn` (after one untimed call)."""
    fn()
    with tempfile.TemporaryDirectory() as log_dir:
        jax.profiler.start_trace(log_dir, create_perfetto_trace=True)
        try:
            for _ in range(reps):
                fn()
        finally:
            jax.profiler.stop_trace()
        paths = glob.glob(f"{log_dir}/**/*.trace.json.gz", recursive=True)
        if not paths:
            raise RuntimeError("jax.profiler wrote no Perfetto trace")
        with gzip.open(paths[0]) as f:
            return json.load(f)["traceEvents"]


def device_pids(events: list[dict]) -> set:
    """The trace's process ids that are accelerator timelines ('/device:GPU:0 ...'), where
    the kernels themselves are recorded, as opposed to host threads launching them."""
    return {e.get("pid") for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
            and "/device:" in str(e.get("args", {}).get("name", ""))}


def summarize(events: list[dict], reps: int, top: int = 15, device_only: bool = False) -> dict:
    """Per-name duration sums of the complete events; `device_only` keeps the kernels on the
    accelerator's timelines (then 'total_ms_per_call' is their sum and 'classes' splits it by kind)."""
    if device_only:
        pids = device_pids(events)
        wanted = lambda event: event.get("pid") in pids  # noqa: E731
    else:
        wanted = lambda event: not event.get("name", "").startswith(_SKIP_PREFIXES)  # noqa: E731
    seconds: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or not wanted(event):
            continue
        seconds[name] += event.get("dur", 0) / 1e6
        counts[name] += 1
    ops = [{"name": name[:120], "ms_per_call": 1e3 * s / reps, "count_per_call": counts[name] / reps}
           for name, s in seconds.most_common(top)]
    result = {"ops": ops, "total_ms_per_call": 1e3 * sum(seconds.values()) / reps}
    if device_only:
        classes: collections.Counter = collections.Counter()
        for name, s in seconds.items():
            classes[kernel_class(name)] += 1e3 * s / reps
        result["classes"] = dict(classes.most_common())
        result["kernels_per_call"] = sum(counts.values()) / reps
    return result


def kernel_class(name: str) -> str:
    """A GPU kernel's kind from its name: cuBLAS/cuDNN/XLA matmuls, XLA reductions, copies,
    or the other (elementwise) fusions."""
    low = name.lower()
    if any(k in low for k in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "dot", "matmul", "cudnn", "flash")):
        return "matmul"
    if "reduce" in low or "reduction" in low or "scatter" in low:
        return "reduction"
    if any(k in low for k in ("memcpy", "memset", "copy", "transpose", "dynamic_update_slice", "concatenate")):
        return "copy/layout"
    return "other fusion"


def top_ops(fn, reps: int = 3, top: int = 15, device_only: bool = False) -> dict:
    """{"ops": [{"name", "ms_per_call", "count_per_call"}...], "total_ms_per_call"} for `fn`."""
    return summarize(trace_events(fn, reps), reps, top, device_only)


def format_ops(profile: dict) -> str:
    """The profile as aligned text lines."""
    lines = [f"  ops total {profile['total_ms_per_call']:.2f} ms per call"]
    if "classes" in profile:
        lines.append(f"  {profile['kernels_per_call']:.0f} kernels per call; by kind: "
                     + ", ".join(f"{k} {v:.1f} ms" for k, v in profile["classes"].items()))
    lines += [f"  {op['ms_per_call']:9.3f} ms {op['count_per_call']:6.0f}x  {op['name']}" for op in profile["ops"]]
    return "\n".join(lines)
