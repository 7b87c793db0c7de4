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
(train.micro_batch_size = n; the same gradient, as micro-batching always is). Each
step records the batch's zero_std_group_fraction and the rows our update ran; our side
also runs once more with loss.skip_zero_advantage=false (same seeds, so the same first
batch and nearly the same later ones) for the before/after in the same run.

    python -m benchmarks.grpo_step [--steps 4] [--warmup 1]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import median_after_warmup, steps_cli, write_result

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


def run_ours(steps: int, warmup: int, skip: bool = True, **shape) -> dict:
    """Per-step records and medians of `steps` plain-loop steps in a fresh run directory."""
    from tasks.session import TrainSession

    cfg = run_config(steps, skip=skip, **shape)
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as run_dir:
        session = TrainSession.open(cfg, run_dir)
        try:
            records = [plain_step(session, step) for step in range(steps)]
            items = [session.items_for_step(step) for step in range(steps)]
        finally:
            session.close()
    return {"records": records, "medians": medians(records, warmup), "items": items,
            "system_prompt": cfg.data.system_prompt}


def medians(records: list[dict], warmup: int) -> dict:
    keys = [k for k in records[0] if isinstance(records[0][k], float)]
    return {k: median_after_warmup([r[k] for r in records], warmup) for k in keys}


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


def run_trl(model_dir: Path, ours: dict, steps: int, warmup: int, n: int = 4, batch_size: int = 4,
            max_new_tokens: int = 64) -> dict:
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
    return {"records": records, "medians": medians(records, warmup), "torch_threads": torch.get_num_threads()}


def run(steps: int = 4, warmup: int = 1) -> dict:
    """Both sides, ours first; returns the result written to results/grpo_step.json."""
    from tasks.models import pull_model

    ours = run_ours(steps, warmup)
    no_skip = run_ours(steps, warmup, skip=False)
    trl = run_trl(pull_model(MODEL), ours, steps, warmup)
    speedup = {k: trl["medians"][k] / ours["medians"][k] for k in ("step", "rollout", "update")}
    speedup_no_skip = {k: trl["medians"][k] / no_skip["medians"][k] for k in ("step", "rollout", "update")}
    ours.pop("items"), no_skip.pop("items")
    result = {"model": MODEL, "dtype": "float32", "prompts_per_step": 4, "samples_per_prompt": 4,
              "max_new_tokens": 64, "learning_rate": LEARNING_RATE, "steps": steps, "warmup_steps": warmup,
              "ours": ours, "ours_no_skip": no_skip, "trl": trl, "speedup": speedup,
              "speedup_no_skip": speedup_no_skip, "goal": "step speedup >= 3x"}
    write_result("grpo_step", result)
    return result


def print_table(result: dict) -> None:
    print(f"\nFull GRPO step, {result['model']} float32 CPU, 4 prompts x 4 samples, <= 64 new tokens "
          f"(median of {result['steps'] - result['warmup_steps']} steps after {result['warmup_steps']} warm-up)")
    print(f"{'':26}{'step s':>9}{'rollout s':>11}{'update s':>10}{'compl len':>11}{'zero-std':>10}{'rows run':>10}")
    names = {"ours": "grpo-flows", "ours_no_skip": "grpo-flows, no skipping", "trl": "TRL GRPOTrainer"}
    for name, label in names.items():
        if name not in result:
            continue
        m = result[name]["medians"]
        extra = (f"{m['zero_std_group_fraction']:>10.2f}{m['rows_run']:>10.0f}" if "rows_run" in m else "")
        print(f"{label:26}{m['step']:>9.2f}{m['rollout']:>11.2f}{m['update']:>10.2f}"
              f"{m['completion_length_mean']:>11.1f}{extra}")
    s = result["speedup"]
    print(f"speedup: step {s['step']:.2f}x (goal >= 3x), rollout {s['rollout']:.2f}x, update {s['update']:.2f}x")
    if "speedup_no_skip" in result:
        print(f"without skipping zero-advantage rows: step {result['speedup_no_skip']['step']:.2f}x")


def main(argv=None) -> dict:
    return steps_cli(__doc__, run, print_table, argv)


if __name__ == "__main__":
    main()
