"""Accelerator time goes to compute: checkpoint overhead, compiles per run, time
to the first step with and without the persistent compilation cache.

Every figure comes from real `grpo train` commands (one process each, as a user runs them)
and the metrics.jsonl / summary.json they write:

1. checkpoint: the quickstart config for `--steps` steps with checkpoint.every_steps=3, once
   with synchronous saves and once with asynchronous ones. Per mode: the mean step time and
   update phase of checkpoint steps, of the steps right after them (the background write
   overlaps their rollout) and of the other steps (step 0, which compiles, and the last
   step, which always saves, excluded), and each save's own times (what it held the step,
   its write).
2. compiles: 100 steps of a tiny random model on GSM8K-length prompts (byte tokenizer,
   synthetic problems at difficulty 3: 122-260 tokens, cut at 256), 16 prompts x 2 samples:
   the programs each phase compiled (summary.json), the padding cost, and how many prompt
   widths the earlier buckets (update: multiples of 16; sampler: multiples of 32 past 64)
   would have compiled for the same prompts. `widths`: the same count for wider spreads
   (no model: token counts only).
3. cache: the quickstart config (or `--cache-model tiny`: the compile run's model and
   prompts) for one step, three fresh run directories: a cold run that fills a shared
   cache folder, the same config again with that folder (warm), and again with an empty
   folder of its own (no cache). Time to the first step = session open (model load,
   restore) + the first step's compute, from summary.json.

    python -m benchmarks.compute_time [--only checkpoint compiles widths cache] [--steps 10]
"""
from __future__ import annotations

import argparse
from collections import Counter
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import RESULTS_DIR, write_result

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart_cpu.yaml"
GSM8K_LIKE = ["model.name_or_path=tiny-llama", "model.init=random", "model.tokenizer=byte", "model.dtype=float32",
              "data.difficulty=3", "data.num_train=1600", "data.system_prompt=null", "rollout.batch_size=16",
              "rollout.n=2", "rollout.max_new_tokens=16", "rollout.max_prompt_tokens=256", "rollout.temperature=1.0",
              "train.steps=100", "checkpoint.every_steps=50",
              # a random model never answers right; stating any number varies within a group, so
              # the zero-advantage skip runs a different number of micro-batches from step to step
              "rewards=[{name: gsm8k_correct, weight: 1.0}, {name: states_number, weight: 0.5}]"]


def train(config: Path, run_dir: Path, sets: list[str]) -> dict:
    """One `grpo train` command; returns its wall seconds, metrics records and summary."""
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", str(config), "--run-dir", str(run_dir),
            "--quiet", *[a for s in ["logging.progress_bar=false", *sets] for a in ("--set", s)]]
    env = dict(os.environ, PREFECT_HOME=str(run_dir.parent / f"prefect-{run_dir.name}"))
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"grpo train failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return {"wall_s": wall, "records": records, "summary": json.loads((run_dir / "summary.json").read_text())}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.mean(values)) if values else None


def checkpoint_summary(records: list[dict], last_step: int) -> dict:
    """Step and phase means of checkpoint steps, the steps right after them, and the others
    (step 0, which compiles, and `last_step`, which always saves, left out)."""
    recs = [r for r in records if 0 < r["step"] < last_step]
    saved = [r for r in recs if "time_checkpoint" in r]
    after = [r for r in recs if r["step"] - 1 in {s["step"] for s in saved}]
    other = [r for r in recs if r not in saved and r not in after]
    step_s = lambda rs: _mean(r["step_seconds"] for r in rs)  # noqa: E731
    return {
        "checkpoint_steps": [r["step"] for r in saved],
        "step_s_checkpoint": step_s(saved), "step_s_after": step_s(after), "step_s_other": step_s(other),
        "update_s_checkpoint": _mean(r["time_update"] + r["time_checkpoint"] for r in saved),
        "update_s_other": _mean(r["time_update"] for r in after + other),
        "save_blocking_s": _mean(r["time_checkpoint"] for r in saved),
        "save_write_s": _mean(r.get("checkpoint_write_s") for r in saved),
        "rollout_s_after": _mean(r["time_rollout"] for r in after),
        "rollout_s_other": _mean(r["time_rollout"] for r in other),
        "records": records,
    }


def checkpoint_rows(steps: int, work: Path, modes=("sync", "async")) -> dict:
    out = {}
    for mode in modes:
        run = train(QUICKSTART, work / f"ckpt-{mode}", [f"train.steps={steps}", "checkpoint.every_steps=3",
                                                        f"checkpoint.asynchronous={str(mode == 'async').lower()}"])
        out[mode] = checkpoint_summary(run["records"], steps - 1)
        out[mode]["compiles"] = {k: v["compiles"] for k, v in run["summary"]["compiles"].items()}
    return out


def _old_widths(longest: int) -> tuple[int, int]:
    """(sampler, update) prompt widths of the earlier buckets."""
    sampler = max(8, 1 << (longest - 1).bit_length()) if longest <= 64 else -(-longest // 32) * 32
    return sampler, max(16, -(-longest // 16) * 16)


def compile_rows(work: Path) -> dict:
    import pyarrow.parquet as pq

    from grpo_core.sampling import prompt_slots

    run_dir = work / "gsm8k-like"
    run = train(QUICKSTART, run_dir, GSM8K_LIKE)
    batches = [np.asarray(pq.read_table(p, columns=["prompt_length"]).column(0))
               for p in sorted(run_dir.glob("steps/step-*/rollout.parquet"))]
    longest = [int(b.max()) for b in batches]
    real = sum(int(b.sum()) for b in batches)
    widths = [prompt_slots(n) for n in longest]
    summary = run["summary"]
    return {
        "steps": len(batches), "prompt_tokens_p5_p50_p95": np.percentile(np.concatenate(batches), [5, 50, 95]).tolist(),
        "compiles": summary["compiles"], "prompt_widths": sorted(set(widths)),
        "old_sampler_widths": sorted({_old_widths(n)[0] for n in longest}),
        "old_update_widths": sorted({_old_widths(n)[1] for n in longest}),
        "bucket_pad_ratio": sum((w - b.max()) * len(b) for w, b in zip(widths, batches)) / real,
        "pad_prompt_ratio_mean": summary.get("pad_prompt_ratio_mean"),
        "pad_update_ratio_mean": summary.get("pad_update_ratio_mean"),
        "wall_s": run["wall_s"],
        "rows_run_per_step": {str(k): v for k, v in sorted(Counter(int(r["rows_run"]) for r in run["records"]
                                                                     if "rows_run" in r).items())},
    }


def width_rows(steps: int = 100, prompts: int = 16) -> dict:
    """Prompt widths `steps` batches of `prompts` GSM8K-format prompts would compile, now and
    with the earlier buckets, and the buckets' padding (slots past each batch's longest
    prompt / real prompt tokens); byte tokenizer, wider spreads than GSM8K included."""
    from grpo_core.data import make_prompt_stream
    from grpo_core.phases import prompt_token_ids
    from grpo_core.sampling import prompt_slots
    from schemas.loading import load_run_config
    from tasks.model_source import model_spec

    rows = {}
    for difficulty, cut in ((3, 256), (4, 512), (5, 512)):
        cfg = load_run_config(QUICKSTART, [*GSM8K_LIKE, f"data.difficulty={difficulty}", "data.num_train=4000",
                                           f"rollout.max_prompt_tokens={cut}"])
        _, tokenizer = model_spec(cfg.model, cfg.data.chat_template)
        stream = make_prompt_stream(cfg.data)
        batches = [np.array([len(p) for p in prompt_token_ids(tokenizer, stream.next_batch(prompts), None, None, cut)])
                   for _ in range(steps)]
        real = sum(int(b.sum()) for b in batches)
        pad = lambda width: sum((width(int(b.max())) - b.max()) * len(b) for b in batches) / real  # noqa: E731
        lengths = np.concatenate(batches)
        rows[f"difficulty {difficulty}, cut at {cut}"] = {
            "prompt_tokens_min_p50_max": [int(lengths.min()), float(np.median(lengths)), int(lengths.max())],
            "widths": sorted({prompt_slots(int(b.max())) for b in batches}), "bucket_pad_ratio": pad(prompt_slots),
            "old_sampler_widths": sorted({_old_widths(int(b.max()))[0] for b in batches}),
            "old_update_widths": sorted({_old_widths(int(b.max()))[1] for b in batches}),
            "old_update_bucket_pad_ratio": pad(lambda n: _old_widths(n)[1]),
        }
    return rows


def cache_rows(work: Path, model: str = "quickstart") -> dict:
    """model: quickstart (SmolLM2) or tiny (the compile run's tiny model and prompts)."""
    shared, base = work / f"xla-shared-{model}", (GSM8K_LIKE if model == "tiny" else [])
    rows = {"model": model}
    for name, cache in (("cold", shared), ("warm", shared), ("no_cache", work / f"xla-empty-{model}")):
        run = train(QUICKSTART, work / f"cache-{model}-{name}",
                    [*base, "train.steps=1", f"train.compilation_cache_dir={cache}"])
        compiles = run["summary"]["compiles"]
        rows[name] = {"time_to_first_step_s": run["summary"]["time_to_first_step_s"], "command_wall_s": run["wall_s"],
                      "compile_s": sum(c["seconds"] for c in compiles.values()),
                      "compiles": sum(c["compiles"] for c in compiles.values()),
                      "from_cache": sum(c["from_cache"] for c in compiles.values())}
    return rows


def markdown(results: dict) -> str:
    lines = []
    if "checkpoint" in results:
        lines += ["| quickstart, checkpoint.every_steps=3 | sync | async |", "|---|---|---|"]
        c = {mode: results["checkpoint"].get(mode, {}) for mode in ("sync", "async")}
        for key in ("step_s_checkpoint", "step_s_after", "step_s_other", "update_s_checkpoint", "update_s_other",
                    "save_blocking_s", "save_write_s", "rollout_s_after", "rollout_s_other"):
            lines.append(f"| {key} | {c['sync'].get(key) or float('nan'):.2f} | {c['async'].get(key) or float('nan'):.2f} |")
        lines.append("")
    if "compiles" in results:
        c = results["compiles"]
        lines += [f"compiles over {c['steps']} GSM8K-length steps: " + json.dumps(
            {phase: row["programs"] for phase, row in c["compiles"].items()}),
            f"prompt widths {c['prompt_widths']} (earlier buckets: sampler {c['old_sampler_widths']}, "
            f"update {c['old_update_widths']}); bucket padding {c['bucket_pad_ratio']:.3f} of real prompt tokens, "
            f"prompt padding {c['pad_prompt_ratio_mean']:.3f}, update padding {c['pad_update_ratio_mean']:.3f}",
            f"update rows run per step (zero-advantage skip) -> steps: {c.get('rows_run_per_step')}", ""]
    if "widths" in results:
        lines += ["| 100 steps x 16 prompts | prompt tokens min/median/max | widths now | bucket padding now | "
                  "earlier: sampler widths | earlier: update widths | earlier update bucket padding |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in results["widths"].items():
            lines.append(f"| {name} | {row['prompt_tokens_min_p50_max']} | {row['widths']} | "
                         f"{row['bucket_pad_ratio']:.3f} | {row['old_sampler_widths']} | {row['old_update_widths']} | "
                         f"{row['old_update_bucket_pad_ratio']:.3f} |")
        lines.append("")
    if "cache" in results:
        lines += [f"| {results['cache']['model']}, 1 step | time to first step s | command s | compile s | compiles (from cache) |",
                  "|---|---|---|---|---|"]
        for name, row in results["cache"].items():
            if name == "model":
                continue
            lines.append(f"| {name} | {row['time_to_first_step_s']:.1f} | {row['command_wall_s']:.1f} | "
                         f"{row['compile_s']:.1f} | {row['compiles']} ({row['from_cache']}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compute_time")
    parser.add_argument("--only", nargs="+", choices=("checkpoint", "compiles", "widths", "cache"),
                        default=["checkpoint", "compiles", "widths", "cache"])
    parser.add_argument("--steps", type=int, default=10, help="quickstart steps of the checkpoint comparison")
    parser.add_argument("--modes", nargs="+", choices=("sync", "async"), default=["sync", "async"],
                        help="checkpoint modes to run (one at a time where memory is short)")
    parser.add_argument("--cache-model", choices=("quickstart", "tiny"), default="quickstart",
                        help="the model of the cache runs")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="compute-time-"))
    runners = {"checkpoint": lambda: checkpoint_rows(args.steps, work, args.modes), "compiles": lambda: compile_rows(work),
               "widths": width_rows, "cache": lambda: cache_rows(work, args.cache_model)}
    for name in args.only:
        print(f"=== {name} ===", flush=True)
        load_before = os.getloadavg()[0]
        result = {name: runners[name]()}
        write_result(f"compute_time_{name}", {**result, "load_average_1m_before": load_before})
        text = markdown(result)
        (RESULTS_DIR / f"compute_time_{name}.md").write_text(text + f"\n\nload average (1 min) before "
                                                             f"{load_before:.1f}, after {os.getloadavg()[0]:.1f}\n")
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
