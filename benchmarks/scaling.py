"""Step time vs batch size and vs sampled length, with the fitted growth exponent.

A GRPO step here is grpo_core's rollout (`sampling.generate`, n samples per prompt) plus
the update (`Trainer.step`, AdamW) of SmolLM2-135M-Instruct in float32 on CPU. EOS does
not stop sampling (`stop_at_eos=False`), so every point samples exactly the length it
names; rewards and advantages are host work of microseconds and are replaced by random
advantages. Each point: one warm-up call (compiles that shape), then the median of
`repeats` timed steps. The fit is y = a * x**k in log-log space (benchmarks.report).

    python -m benchmarks.scaling [--quick]

Writes scaling.json, scaling_batch.png and scaling_length.png into the results folder.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from flows.cli.main import positive_int
from benchmarks.report import RESULTS_DIR, fit_power_law, run_dir, write_result

FULL = {"batch": {"values": [1, 2, 4, 8], "fixed": 64}, "length": {"values": [32, 64, 128, 256], "fixed": 2}}
QUICK = {"batch": {"values": [1, 2, 4], "fixed": 32}, "length": {"values": [32, 64, 128], "fixed": 1}}


class StepBench:
    """Model, trainer and prompts loaded once; `step(prompts, new_tokens)` times one GRPO step."""

    def __init__(self, n: int = 4, lr: float = 1e-6):
        import optax

        from benchmarks.grpo_step import run_config
        from grpo_core.data import make_prompt_stream
        from grpo_core.phases import prompt_token_ids
        from grpo_core.sharding import make_mesh
        from grpo_core.train_step import Trainer
        from tasks.model_source import resolve_model

        cfg = run_config(steps=1)
        self.n, self.mesh = n, make_mesh(None)
        self.model = resolve_model(cfg.model, cfg.train.seed, self.mesh, cfg.data.chat_template)
        self.trainer = Trainer(self.model.config, optax.adamw(lr), mesh=self.mesh)
        self.opt_state = self.trainer.init_opt_state(self.model.params)
        items = make_prompt_stream(cfg.data).next_batch(8)
        self.prompts = prompt_token_ids(self.model.tokenizer, items, cfg.data.system_prompt,
                                        cfg.data.chat_template, cfg.rollout.max_prompt_tokens)

    def step(self, prompts: int, new_tokens: int, seed: int) -> dict:
        """Seconds of rollout, update and the whole step for `prompts` x n sequences."""
        import jax
        import pyarrow as pa

        from grpo_core.phases import update_batch
        from grpo_core.sampling import generate

        chosen = self.prompts[:prompts]
        start = time.perf_counter()
        out = generate(self.model, chosen, new_tokens, temperature=1.0, seed=seed, n=self.n, stop_at_eos=False)
        rolled = time.perf_counter()
        rollout = pa.table({"prompt_ids": [p for p in chosen for _ in range(self.n)], "completion_ids": out.tokens})
        advantages = pa.table({"advantage": np.random.default_rng(seed).normal(size=len(out.tokens)).astype(np.float32)})
        batch = update_batch(rollout, advantages, new_tokens, self.model.pad_token_id)
        params, self.opt_state, metrics = self.trainer.step(self.model.params, self.opt_state,
                                                            self.trainer.shard_batch(batch))
        jax.block_until_ready((params, metrics))
        self.model = type(self.model)(self.model.config, params, self.model.tokenizer)
        end = time.perf_counter()
        return {"step": end - start, "rollout": rolled - start, "update": end - rolled}


def measure_curve(bench: StepBench, x: str, values: list[int], fixed: int, repeats: int) -> dict:
    """Median step/rollout/update seconds at each value of x ('batch' prompts or 'length' tokens)."""
    points = []
    for value in values:
        prompts, tokens = (value, fixed) if x == "batch" else (fixed, value)
        bench.step(prompts, tokens, seed=0)  # compiles this shape
        timed = [bench.step(prompts, tokens, seed=1 + r) for r in range(repeats)]
        points.append({x: value, **{k: statistics.median(t[k] for t in timed) for k in timed[0]}})
    seconds = [p["step"] for p in points]
    return {"x": "rollout.batch_size (prompts)" if x == "batch" else "sampled length (tokens)",
            "fixed": {"max_new_tokens": fixed} if x == "batch" else {"batch_size": fixed},
            "points": points, "fit": fit_power_law(values, seconds),
            "fit_rollout": fit_power_law(values, [p["rollout"] for p in points]),
            "fit_update": fit_power_law(values, [p["update"] for p in points])}


def plot_curve(curve: dict, key: str, path) -> None:
    """Log-log plot of step, rollout and update seconds with the fitted step-time line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.array([p[key] for p in curve["points"]], float)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for part, marker in (("step", "o-"), ("rollout", "s--"), ("update", "^--")):
        ax.plot(xs, [p[part] for p in curve["points"]], marker, label=part)
    fit = curve["fit"]
    ax.plot(xs, fit["coefficient"] * xs ** fit["exponent"], "k:", label=f"fit x^{fit['exponent']:.2f}")
    ax.set(xscale="log", yscale="log", xlabel=curve["x"], ylabel="seconds",
           title=f"GRPO step time, SmolLM2-135M CPU ({', '.join(f'{k}={v}' for k, v in curve['fixed'].items())})")
    ax.title.set_fontsize(8)
    ax.minorticks_off()  # log-axis minor labels would overprint the point labels
    ax.set_xticks(xs, [str(int(x)) for x in xs])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, repeats: int | None = None, results_dir: Path = RESULTS_DIR) -> dict:
    grid = QUICK if quick else FULL
    repeats = repeats or (1 if quick else 3)
    bench = StepBench()
    curves = {x: measure_curve(bench, x, grid[x]["values"], grid[x]["fixed"], repeats) for x in ("batch", "length")}
    for key, curve in curves.items():
        plot_curve(curve, key, results_dir / f"scaling_{key}.png")
    result = {"model": "smollm2-135m-instruct", "dtype": "float32", "samples_per_prompt": bench.n,
              "repeats": repeats, "quick": quick, "curves": curves,
              "plots": [f"scaling_{key}.png" for key in curves]}
    write_result("scaling", result, results_dir)
    return result


def print_table(result: dict) -> None:
    for key, curve in result["curves"].items():
        print(f"\nstep time vs {curve['x']} ({curve['fixed']}); fitted growth x^{curve['fit']['exponent']:.2f} "
              f"(rollout x^{curve['fit_rollout']['exponent']:.2f}, update x^{curve['fit_update']['exponent']:.2f})")
        for p in curve["points"]:
            print(f"  {key}={p[key]:<5} step {p['step']:7.2f} s  rollout {p['rollout']:7.2f} s  update {p['update']:7.2f} s")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter points")
    parser.add_argument("--repeats", type=positive_int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: a new one under "
                                                               "~/.cache/grpo-flows/benchmarks)")
    args = parser.parse_args(argv)
    result = run(args.quick, args.repeats, results_dir=args.out or run_dir())
    print_table(result)
    return result


if __name__ == "__main__":
    main()
