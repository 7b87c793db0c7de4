"""Sampler/trainer split against the synchronous step on a TPU slice: predicted step times
from the compiled programs' costs and the chip rates (predictions, not measurements).

For a config and a slice, the run's rollout and update programs are compiled for the
slice on this CPU host (libtpu's compile-only client, as `grpo preflight --compile` does):
once on every chip (the synchronous step: the rollout, then the update, on the same
chips) and once per split (mesh.sampler_devices = S with rollout.max_staleness = 1: the
rollout on the first S chips, the update on the rest, side by side). Each program's
optimized HLO gives its per-chip FLOPs and ICI bytes (loops multiplied by their trip
counts, grpo_core.hlo); the rollout's roofline is benchmarks.tpu_roofline's (prefill plus
max_new_tokens decode steps, every row running to the limit); the update's micro-batch loop,
whose trip count is data-dependent (the zero-advantage skip), is counted at its worst case
(every micro-batch run); the update's time is the largest
of FLOPs / peak, ICI bytes / ICI rate and a lower bound of its HBM bytes (the weights read
once per pass per micro-batch, 3 passes with remat and 2 without, plus one read and write
of the params, gradients and optimizer state; activations not counted). Rates are the
published per-chip ones (benchmarks.tpu_roofline.RATES), so every figure is a lower bound
of a real time; the ratio between the two steps is the figure to read.

    synchronous step = rollout(all chips) + update(all chips)
    split step       = max(rollout(S chips), update(the other chips)) + publish
    publish          = the sampler's copy of the weights one sampler chip receives, over ICI
                       (plus, on several hosts with the trainer's params split across them,
                       the gather into one replica per host a trainer chip receives first)

Host work (reward, advantage, Prefect) is left out of both. A split of a slice of several
hosts is the one `grpo train` makes: each host gives the same share of its chips to each
group, the two groups slabs of the chip torus (tasks/device_groups.py).

    python -m benchmarks.split_step run [--config FILE ...] [--slices v6e-8,v6e-16]
        [--splits half|all|S,...] [--set K=V ...] [--jsonl FILE]   one child process per program set
    python -m benchmarks.split_step report [--jsonl FILE]    the markdown table
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.tpu_calibration import run_child
from benchmarks.tpu_roofline import CONFIGS, RATES, _read, predict

DEFAULT_JSONL = Path(__file__).parent / "results" / "split_step.jsonl"
GIB = 1024**3


def measure(config: str, slice_name: str, sampler_devices: str, *extra: str) -> dict:
    """Compile one cell's rollout and update (in the child process) and read their costs."""
    from benchmarks.tpu_roofline import rollout_fields
    from flows.compile_check import phase_programs
    from grpo_core import aot, hlo
    from grpo_core.memory import get_accelerator
    from schemas import load_run_config

    split = int(sampler_devices)
    overrides = [f"mesh.sampler_devices={split}", "rollout.max_staleness=1", *extra] if split else []
    cfg = load_run_config(config, overrides)
    acc = get_accelerator(slice_name)
    hosts = acc.hosts  # several: each host gives split / hosts of its chips (tasks/device_groups.py)
    built = phase_programs(cfg, acc)
    row = {"config": config, "slice": slice_name, "hosts": hosts, "sampler_devices": split,
           **({"overrides": list(extra)} if split and extra else {}),
           "trainer_devices": acc.chips - split if split else acc.chips, "sampler_chips": split or acc.chips,
           "mesh": dict(built.mesh.shape), "micro_batches": built.derived.grad_accum_steps,
           "remat": cfg.model.remat, "capacity_bytes": acc.capacity_bytes}
    for phase in ("rollout", "update"):
        started = time.perf_counter()
        try:
            compiled = built.lowerings[phase]().compile()
        except Exception as exc:  # XLA's errors (out of memory among them) are data here
            row[f"{phase}_error"] = str(exc).splitlines()[0][:300]
            continue
        row[f"{phase}_compile_seconds"] = round(time.perf_counter() - started, 1)
        text = compiled.as_text()
        memory = aot.ProgramMemory.of(compiled, built.resident if phase == "rollout" else 0)
        row[f"{phase}_xla_bytes"] = memory.total
        if phase == "rollout":
            row["rollout"] = rollout_fields(cfg, built.model_cfg, built.generation_mesh,
                                            built.derived.prompts_global_per_step, built.dtype, text)
            gen = built.generation_mesh.shape
            row["publish_bytes_per_sampler_chip"] = row["rollout"]["weight_bytes"] // (gen["fsdp"] * gen["tp"])
        else:
            cost = hlo.loop_cost(text, "ENTRY")  # the micro-batch loop counted once: its trip count is data-
            comps = hlo.computations(text)       # dependent (the zero-advantage skip), so add its other iterations
            for body in (b for b, trips in hlo.while_loops(text, comps) if trips is None):
                extra = hlo.loop_cost(text, body, comps)
                cost.flops += (built.derived.grad_accum_steps - 1) * extra.flops
                for kind, value in extra.collective_bytes.items():
                    cost.collective_bytes[kind] = cost.collective_bytes.get(kind, 0.0) + (
                        built.derived.grad_accum_steps - 1) * value
            weights = built.model_cfg.num_params * built.dtype.itemsize // built.mesh.shape["tp"]
            state = aot.resident_bytes(aot.abstract_params(built.model_cfg, built.dtype, built.mesh))
            passes = 3 if cfg.model.remat else 2
            row["update"] = {"flops": cost.flops, "collective_bytes": cost.total_collective_bytes,
                             "hbm_bytes_lower_bound": passes * built.derived.grad_accum_steps * weights + 2 * 4 * state}
    trainer_local, shards = row["trainer_devices"] // hosts, built.mesh.shape["fsdp"] * built.mesh.shape["tp"]
    if split and shards > trainer_local and "rollout" in row:  # gathered into one replica per host first
        weight_bytes = row["rollout"]["weight_bytes"]
        row["publish_gather_bytes_per_trainer_chip"] = weight_bytes // trainer_local - weight_bytes // shards
    return row


def publish_seconds(row: dict) -> float:
    """The params transfer of a split: the host replicas' gather on the trainer chips (when
    their mesh splits the params across hosts), then the copy a sampler chip receives."""
    moved = row.get("publish_gather_bytes_per_trainer_chip", 0) + row["publish_bytes_per_sampler_chip"]
    return moved / _rate(row["slice"])["ici"]


def rollout_seconds(row: dict) -> float | None:
    if "rollout" not in row:
        return None
    return predict({**row["rollout"], "slice": row["slice"], "xla_bytes": row.get("rollout_xla_bytes", 0)})["rollout_s"]


def update_seconds(row: dict) -> tuple[float, str] | None:
    if "update" not in row:
        return None
    rate, u = _rate(row["slice"]), row["update"]
    bounds = {"flops": u["flops"] / rate["flops"], "ici": u["collective_bytes"] / rate["ici"],
              "hbm": u["hbm_bytes_lower_bound"] / rate["hbm"]}
    bound = max(bounds, key=bounds.get)
    return bounds[bound], bound


def _rate(slice_name: str) -> dict:
    return RATES[slice_name.split("-")[0].replace("v5litepod", "v5e")]


def fits(row: dict) -> bool:
    return all(row.get(f"{p}_xla_bytes") is not None and row[f"{p}_xla_bytes"] <= row["capacity_bytes"]
               for p in ("rollout", "update"))


def step_seconds(row: dict) -> float | None:
    rollout, update = rollout_seconds(row), update_seconds(row)
    if rollout is None or update is None:
        return None
    if not row["sampler_devices"]:
        return rollout + update[0]
    return max(rollout, update[0]) + publish_seconds(row)


def candidate_splits(slice_name: str, how: str) -> list[int]:
    from grpo_core.memory import get_accelerator

    chips = get_accelerator(slice_name).chips
    if how == "half":
        return [chips // 2]
    if how == "all":
        return list(range(chips // 4 or 1, chips, chips // 4 or 1))
    return [int(s) for s in how.split(",")]


def run(configs, slices, splits: str, jsonl: Path, overrides: tuple = ()) -> None:
    """Measure every cell not in `jsonl` yet; `overrides` (--set) apply to the splits only."""
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["config"], r["slice"], r["sampler_devices"], tuple(r.get("overrides", ()))) for r in _read(jsonl)}
    for slice_name in slices:
        for config in configs:
            for split in [0, *candidate_splits(slice_name, splits)]:
                extra = tuple(overrides) if split else ()
                if (config, slice_name, split, extra) in done:
                    continue
                started = time.perf_counter()
                rows = run_child("benchmarks.split_step", [config, slice_name, str(split), *extra], jsonl)
                if rows is None:  # libtpu itself failed: record it, so the table says so
                    rows = [{"config": config, "slice": slice_name, "sampler_devices": split,
                             "child_error": "the compile process failed (see stderr)"}]
                    with jsonl.open("a") as f:
                        f.write(json.dumps(rows[0]) + "\n")
                step = step_seconds(rows[0]) if "child_error" not in rows[0] else None
                print(f"{Path(config).stem} {slice_name} sampler_devices={split}: "
                      f"{'step ' + format(step, '.2f') + ' s' if step else 'no prediction'} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)


def report(jsonl: Path) -> str:
    return report_rows(_read(jsonl))


def report_rows(rows: list[dict]) -> str:
    """The markdown table: each split next to the synchronous step of its config and slice."""
    lines = ["| model | slice | step | sampler / trainer chips | rollout s | update s (bound) | publish ms | "
             "predicted step s | vs synchronous | XLA GiB rollout / update | fits |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    sync = {(r["config"], r["slice"]): step_seconds(r) for r in rows
            if not r["sampler_devices"] and "child_error" not in r}
    for row in sorted(rows, key=lambda r: (r["slice"], r["config"], r["sampler_devices"])):
        model = Path(row["config"]).stem.replace("grpo_gsm8k_", "").split("_bs")[0]
        split = row["sampler_devices"]
        if "child_error" in row:
            lines.append(f"| {model} | {row['slice']} | split | {split} / - | libtpu failed to compile | | | | | | |")
            continue
        rollout, update, step = rollout_seconds(row), update_seconds(row), step_seconds(row)
        base = sync.get((row["config"], row["slice"]))
        kind = "split" if split else "synchronous"
        if split and row.get("hosts", 1) > 1:
            per_host, chips = row["sampler_devices"] // row["hosts"], row["sampler_devices"] + row["trainer_devices"]
            mesh = " ".join(f"{a}={n}" for a, n in row["mesh"].items() if n > 1)
            kind += f" ({per_host} of each host's {chips // row['hosts']}; trainer {mesh})"
        publish = f"{1e3 * publish_seconds(row):.1f}" if split and "publish_bytes_per_sampler_chip" in row else "-"
        xla = " / ".join(f"{row[f'{p}_xla_bytes'] / GIB:.2f}" if f"{p}_xla_bytes" in row else "error"
                         for p in ("rollout", "update"))
        lines.append(
            f"| {model} | {row['slice']} | {kind} | {row['sampler_chips'] if split else 'all ' + str(row['trainer_devices'])}"
            f"{' / ' + str(row['trainer_devices']) if split else ''} | "
            f"{'-' if rollout is None else format(rollout, '.2f')} | "
            f"{'-' if update is None else format(update[0], '.2f') + ' (' + update[1] + ')'} | {publish} | "
            f"{'-' if step is None else format(step, '.2f')} | "
            f"{format(base / step, '.2f') + 'x' if split and step and base else ('1.00x' if not split and step else '-')} | "
            f"{xla} | {'yes' if fits(row) else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "report", "child"))
    parser.add_argument("cell", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--config", action="append", help="run config (repeatable; default: the shipped 3B and 7B)")
    parser.add_argument("--slices", default="v6e-8,v6e-16")
    parser.add_argument("--splits", default="half", help="half (default), all (every quarter of the chips), or S,S,...")
    parser.add_argument("--jsonl", type=Path, default=DEFAULT_JSONL)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for the split cells, e.g. 'mesh.shape={dp: 1, fsdp: 8, tp: 1}'")
    args = parser.parse_args(argv)
    if args.mode == "child":
        print(json.dumps(measure(*args.cell)))
    elif args.mode == "run":
        run(args.config or CONFIGS, args.slices.split(","), args.splits, args.jsonl, tuple(args.overrides))
        print(report(args.jsonl))
    else:
        print(report(args.jsonl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
