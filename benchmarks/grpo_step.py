"""Full GRPO step on CPU: grpo-flows vs TRL's GRPOTrainer, same machine, same run.

Both sides train SmolLM2-135M-Instruct in float32 on the same synthetic GSM8K-format
prompts (our seeded stream; TRL gets exactly the prompts of our steps, in order, with
the same system prompt and the tokenizer's chat template), 4 prompts x 4 samples, at
most 64 new tokens, temperature 1, AdamW at the same constant learning rate with
global-norm clipping 1.0, beta 0 (no reference model), token-mean loss (TRL's "dapo"),
one optimizer update per step, gsm8k_correct as the only reward. The first `warmup`
steps (our XLA compilation, torch's lazy init) are excluded; the figure is the median
of the remaining steps.

Breakdown: "rollout" = sampling + reward + advantage (what TRL's
`_generate_and_score_completions` does), "update" = the rest of the step. Our side runs
the TrainSession phase calls in a plain loop (no Prefect; see overhead.py for that).
Differences the figures do not hide: both stop a group early when every row hits EOS,
so completion lengths differ with the samples (recorded); our update pads prompts to a
multiple of 64 plus the full 64 completion tokens, TRL pads to the longest row.

Zero-advantage rows: groups whose rewards are all equal have advantage 0 and, with beta
0, no gradient; our update leaves them out (grpo_core/row_skip.py), TRL runs them. The
skip leaves out whole micro-batches, so with it our update runs micro-batches of one group
(train.micro_batch_size = n; the same gradient, as micro-batching always is). Our side
runs twice, with loss.skip_zero_advantage=false (same seeds, so the same first batch and
nearly the same later ones) and with the skip. The no-skip run against TRL is the
like-for-like figure: both sides compute every row. The skip's gain is the no-skip step
over the skip step, and it depends on the batch's zero_std_group_fraction (recorded per
step): a batch whose groups all tie costs the skip run almost no update.

Signal steps: with `signal_steps` set (the quick mode), the skip run keeps stepping past
`steps` until that many timed steps have zero_std_group_fraction < 1 (at most
`max_steps`), and the medians of every side are taken over those step indices only; the
result says whether enough such steps came (`signal_steps_found`).

    python -m benchmarks.grpo_step [--steps 4] [--warmup 1] [--out DIR]
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import RESULTS_DIR, steps_cli, write_result

MODEL = "smollm2-135m-instruct"
LEARNING_RATE = 1e-6


def run_config(steps: int, batch_size: int = 4, n: int = 4, max_new_tokens: int = 64, skip: bool = True):
    """The grpo-flows RunConfig of the comparison (see module doc)."""
    from schemas.loading import build_run_config

    return build_run_config({
        "model": {"name_or_path": MODEL, "dtype": "float32"},
        "data": {"source": "synthetic", "difficulty": 1},
        "rollout": {"batch_size": batch_size, "n": n, "max_new_tokens": max_new_tokens, "temperature": 1.0},
        "rewards": [{"name": "gsm8k_correct", "weight": 1.0}],
        "loss": {"beta": 0.0, "agg": "token_mean", "skip_zero_advantage": skip},
        "train": {"steps": steps, "micro_batch_size": n if skip else None, "optimizer": {
            "name": "adamw", "clip_norm": 1.0, "weight_decay": 0.0,
            "lr_schedule": {"type": "constant", "peak_value": LEARNING_RATE, "warmup_steps": 0}}},
        "checkpoint": {"every_steps": 1_000_000},
        "logging": {"progress_bar": False},
    }, source="benchmarks")


def plain_step(session, step: int) -> dict:
    """One step as direct grpo_core/session calls; seconds per phase and the rollout's lengths."""
    from grpo_core import phases

    cfg, times = session.cfg, {}
    start = time.perf_counter()
    rollout = session.rollout(step)
    times["generate"] = time.perf_counter() - start
    rewards, reward_stats = phases.reward_table(rollout, cfg.rewards)
    adv = cfg.advantage
    advantages, adv_stats = phases.advantage_table(rewards, cfg.rollout.n, adv.estimator, adv.eps, adv.std_ddof,
                                                   adv.clip)
    times["rollout"] = time.perf_counter() - start
    metrics = session.update(step, rollout, advantages)
    times["step"] = time.perf_counter() - start
    times["update"] = times["step"] - times["rollout"]
    lengths = np.asarray(rollout.column("completion_length"))
    return {**times, "completion_length_mean": float(lengths.mean()), "reward_mean": reward_stats["reward_mean"],
            "loss": metrics["loss"], "zero_std_group_fraction": adv_stats["zero_std_group_fraction"],
            "rows_run": metrics["rows_run"], "rows_total": metrics["rows_total"]}


def run_ours(steps: int, warmup: int, skip: bool = True, signal_steps: int = 0, max_steps: int | None = None,
             **shape) -> dict:
    """Per-step records of at least `steps` plain-loop steps in a fresh run directory, continuing
    (up to `max_steps`) until `signal_steps` timed steps have groups that carry signal."""
    from tasks.session import TrainSession

    limit = max(steps, max_steps or steps)
    cfg = run_config(limit, skip=skip, **shape)
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as run_dir:
        session = TrainSession.open(cfg, run_dir)
        try:
            records = []
            while len(records) < limit and not enough_steps(records, steps, warmup, signal_steps):
                records.append(plain_step(session, len(records)))
            items = [session.items_for_step(step) for step in range(len(records))]
        finally:
            session.close()
    return {"records": records, "items": items, "system_prompt": cfg.data.system_prompt}


def signal_indices(records: list[dict], warmup: int) -> list[int]:
    """Timed steps whose batch has at least one group with rewards not all tied."""
    return [i for i, r in enumerate(records) if i >= warmup and r["zero_std_group_fraction"] < 1.0]


def enough_steps(records: list[dict], steps: int, warmup: int, signal_steps: int) -> bool:
    return len(records) >= steps and len(signal_indices(records, warmup)) >= signal_steps


def measured_indices(records: list[dict], warmup: int, signal_steps: int) -> list[int]:
    """The steps the medians cover: the signal steps when asked for and found, else every timed step."""
    found = signal_indices(records, warmup)
    if signal_steps and found:
        return found[:signal_steps]
    if len(records) <= warmup:
        raise ValueError(f"{len(records)} steps leave none after {warmup} warm-up steps")
    return list(range(warmup, len(records)))


def medians(records: list[dict], indices: list[int]) -> dict:
    """Median of every float field of `records` over the steps at `indices`."""
    keys = [k for k in records[0] if isinstance(records[0][k], float)]
    return {k: statistics.median(records[i][k] for i in indices) for k in keys}


def trl_dataset(items_per_step: list[list[dict]], system_prompt: str | None):
    """A conversational TRL dataset holding our steps' prompts in step order."""
    from datasets import Dataset

    rows = []
    for items in items_per_step:
        for it in items:
            messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
            rows.append({"prompt": messages + [{"role": "user", "content": it["question"]}],
                         "question": it["question"], "ground_truth": it["ground_truth"]})
    return Dataset.from_list(rows)


def gsm8k_correct_for_trl(prompts, completions, question, ground_truth, **_):
    """Our gsm8k_correct reward with TRL's reward-function signature."""
    from grpo_core.rewards import REWARD_FUNCTIONS

    fn = REWARD_FUNCTIONS["gsm8k_correct"]
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [fn({"question": q, "answer": f"#### {gt}", "ground_truth": gt}, t)
            for q, gt, t in zip(question, ground_truth, texts)]


def trl_args(output_dir: str, steps: int, n: int, batch_size: int, max_new_tokens: int):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=batch_size * n,
        num_generations=n, max_completion_length=max_new_tokens, learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
        beta=0.0, loss_type="dapo", num_iterations=1, temperature=1.0, top_p=1.0, top_k=0,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, shuffle_dataset=False,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
    )


def timed_trainer_class():
    """GRPOTrainer that times each `_generate_and_score_completions` (the rollout half)."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.rollout_seconds, self.completion_lengths = [], []

        def _generate_and_score_completions(self, inputs):
            start = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            self.rollout_seconds.append(time.perf_counter() - start)
            self.completion_lengths.append(float(out["completion_mask"].sum(-1).float().mean()))
            return out

    return TimedGRPOTrainer


def step_timer():
    """A TrainerCallback recording wall seconds between on_step_begin and on_step_end."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self._start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)

    return StepTimer()


def run_trl(model_dir: Path, ours: dict, steps: int, n: int = 4, batch_size: int = 4, max_new_tokens: int = 64) -> dict:
    """Train TRL's GRPOTrainer on our steps' prompts; per-step records and medians."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    timer = step_timer()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        trainer = timed_trainer_class()(
            model=model, reward_funcs=gsm8k_correct_for_trl, args=trl_args(out, steps, n, batch_size, max_new_tokens),
            train_dataset=trl_dataset(ours["items"], ours["system_prompt"]), processing_class=tokenizer,
            callbacks=[timer])
        trainer.train()
    records = [{"step": s, "rollout": r, "update": s - r, "completion_length_mean": length}
               for s, r, length in zip(timer.seconds, trainer.rollout_seconds, trainer.completion_lengths)]
    return {"records": records, "torch_threads": torch.get_num_threads()}


def ratios(over: dict, under: dict) -> dict:
    """over / under for the step and its two halves (seconds, so > 1 means `under` is faster)."""
    return {k: over["medians"][k] / under["medians"][k] for k in ("step", "rollout", "update")}


def run(steps: int = 4, warmup: int = 1, signal_steps: int = 0, max_steps: int | None = None,
        results_dir: Path = RESULTS_DIR) -> dict:
    """Our skip run first (it picks the steps), then no-skip and TRL over the same step count."""
    from tasks.models import pull_model

    ours = run_ours(steps, warmup, signal_steps=signal_steps, max_steps=max_steps)
    count = len(ours["records"])
    indices = measured_indices(ours["records"], warmup, signal_steps)
    no_skip = run_ours(count, warmup, skip=False)
    trl = run_trl(pull_model(MODEL), ours, count)
    for side in (ours, no_skip, trl):
        side["medians"] = medians(side["records"], indices)
    ours.pop("items"), no_skip.pop("items")
    result = {"model": MODEL, "dtype": "float32", "prompts_per_step": 4, "samples_per_prompt": 4,
              "max_new_tokens": 64, "learning_rate": LEARNING_RATE, "steps": count, "warmup_steps": warmup,
              "measured_steps": indices, "signal_steps_wanted": signal_steps,
              "signal_steps_found": len(signal_indices(ours["records"], warmup)),
              "ours": ours, "ours_no_skip": no_skip, "trl": trl, "speedup_no_skip": ratios(trl, no_skip),
              "speedup": ratios(trl, ours), "skip_gain": ratios(no_skip, ours),
              "zero_std_group_fraction": ours["medians"]["zero_std_group_fraction"],
              "goal": {"speedup_no_skip.step": ">= 2", "speedup.step": ">= 3"}}
    write_result("grpo_step", result, results_dir)
    return result


def summary_lines(result: dict) -> list[str]:
    """The comparison in words, like for like first, then the skip with its zero-std fraction."""
    like, skip, gain = result["speedup_no_skip"], result["speedup"], result["skip_gain"]
    zero_std = result["zero_std_group_fraction"]
    lines = [f"like for like (both sides run every row): step {like['step']:.2f}x TRL (goal >= 2x), "
             f"rollout {like['rollout']:.2f}x, update {like['update']:.2f}x",
             f"zero-advantage skip: our step gains {gain['step']:.2f}x over no skipping (update "
             f"{gain['update']:.2f}x) at zero-std group fraction {zero_std:.2f}; with it, step "
             f"{skip['step']:.2f}x TRL (goal >= 3x)"]
    if result["signal_steps_wanted"] and not result["signal_steps_found"]:
        lines.append(f"no timed step of {result['steps']} had a group with untied rewards: the skip's "
                     f"figures are those of all-tied batches")
    return lines


def print_table(result: dict) -> None:
    print(f"\nFull GRPO step, {result['model']} float32 CPU, 4 prompts x 4 samples, <= 64 new tokens "
          f"(median of steps {result['measured_steps']} of {result['steps']}, {result['warmup_steps']} warm-up)")
    print(f"{'':26}{'step s':>9}{'rollout s':>11}{'update s':>10}{'compl len':>11}{'zero-std':>10}{'rows run':>10}")
    names = {"ours_no_skip": "grpo-flows, no skipping", "ours": "grpo-flows, skip", "trl": "TRL GRPOTrainer"}
    for name, label in names.items():
        m = result[name]["medians"]
        extra = (f"{m['zero_std_group_fraction']:>10.2f}{m['rows_run']:>10.0f}" if "rows_run" in m else "")
        print(f"{label:26}{m['step']:>9.2f}{m['rollout']:>11.2f}{m['update']:>10.2f}"
              f"{m['completion_length_mean']:>11.1f}{extra}")
    print("\n".join(summary_lines(result)))


def main(argv=None) -> dict:
    return steps_cli(__doc__, run, print_table, argv)


if __name__ == "__main__":
    main()
