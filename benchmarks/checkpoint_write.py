"""What a checkpoint save costs the CPU: zstd-compressed arrays (orbax's default) vs uncompressed.

Saves a state of random float32 arrays the size of the quickstart's (SmolLM2-135M params
and two Adam moments: 3 x 134.5M floats, 1.6 GB) with `grpo_core.checkpoint.Checkpoints`
(asynchronous, as a run saves), `compress` false and true alternating, and reports per save
the process CPU seconds from `save` to the commit, the wall seconds, and the bytes on disk.
In a run that CPU is taken from the steps that overlap the write. Writes
benchmarks/results/checkpoint_write.json.

    python -m benchmarks.checkpoint_write [--repeats 2] [--millions 403]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.report import write_result
from flows.cli.main import positive_int


def _state(millions: int):
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    chunk = 13_000_000  # ~50 MB leaves, like a model's matrices
    leaves = [jnp.asarray(rng.standard_normal(chunk, np.float32) * 0.02) for _ in range(max(1, millions * 10**6 // chunk))]
    return {f"w{i}": x for i, x in enumerate(leaves)}


def save_once(state: dict, compress: bool, parent: Path) -> dict:
    from grpo_core.checkpoint import Checkpoints

    directory = Path(tempfile.mkdtemp(dir=parent))
    checkpoints = Checkpoints(directory, compress=compress)
    wall, cpu = time.perf_counter(), time.process_time()
    saved = checkpoints.save(1, state, {}, {"next_step": 1})
    checkpoints.wait()
    result = {"compress": compress, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
              "blocking_s": saved.blocking_s,
              "bytes_on_disk": sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())}
    checkpoints.close()
    shutil.rmtree(directory)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--millions", type=positive_int, default=403, help="float32 values in the state (millions)")
    args = parser.parse_args(argv)
    state = _state(args.millions)
    nbytes = sum(x.nbytes for x in state.values())
    with tempfile.TemporaryDirectory(prefix="ckpt-write-") as parent:
        runs = [save_once(state, compress, Path(parent)) for _ in range(args.repeats) for compress in (True, False)]
    print(f"state {nbytes / 1e9:.2f} GB float32; async save + wait, alternating")
    print("| compress | process CPU s | wall s | held the caller s | on disk GB |\n|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['compress']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} | {r['blocking_s']:.2f} | "
              f"{r['bytes_on_disk'] / 1e9:.2f} |")
    write_result("checkpoint_write", {"state_bytes": nbytes, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
