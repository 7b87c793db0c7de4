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


def top_ops(fn, reps: int = 3, top: int = 15) -> dict:
    """{"ops": [{"name", "ms_per_call", "count_per_call"}...], "total_ms_per_call"} for `fn`."""
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
            events = json.load(f)["traceEvents"]
    seconds: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith(_SKIP_PREFIXES):
            continue
        seconds[name] += event.get("dur", 0) / 1e6
        counts[name] += 1
    ops = [{"name": name[:120], "ms_per_call": 1e3 * s / reps, "count_per_call": counts[name] / reps}
           for name, s in seconds.most_common(top)]
    return {"ops": ops, "total_ms_per_call": 1e3 * sum(seconds.values()) / reps}


def format_ops(profile: dict) -> str:
    """The profile as aligned text lines."""
    lines = [f"  ops total {profile['total_ms_per_call']:.2f} ms per call"]
    lines += [f"  {op['ms_per_call']:9.3f} ms {op['count_per_call']:6.0f}x  {op['name']}" for op in profile["ops"]]
    return "\n".join(lines)
