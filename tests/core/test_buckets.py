"""The compile budget: the prompt buckets over GSM8K-length prompts, and compiles counted
per phase on a tiny model.

GSM8K-length prompts, offline: the synthetic problems at difficulty 3 under the byte
tokenizer are 122-260 tokens long (median 187), the spread of real GSM8K questions under a
chat template (~100-250 tokens).
"""
import numpy as np
import pytest

from grpo_core import compiles, phases
from grpo_core.data import make_prompt_stream
from grpo_core.sampling import prompt_slots
from tasks.model_source import model_spec
from train_helpers import tiny_config

GSM8K_LIKE = ("data.difficulty=3", "data.num_train=1600", "rollout.max_prompt_tokens=256")


def _prompt_lengths(cfg, steps: int) -> list[np.ndarray]:
    """Prompt token counts of each step's global batch, cut at max_prompt_tokens as the rollout does."""
    _, tokenizer = model_spec(cfg.model, cfg.data.chat_template)
    stream, r, d = make_prompt_stream(cfg.data), cfg.rollout, cfg.data
    batches = []
    for _ in range(steps):
        items = stream.next_batch(r.batch_size)
        ids = phases.prompt_token_ids(tokenizer, items, d.system_prompt, d.chat_template, r.max_prompt_tokens)
        batches.append(np.array([len(p) for p in ids]))
    return batches


def test_buckets_pad_at_most_a_quarter_past_64_and_never_shrink():
    widths = [prompt_slots(n) for n in range(1, 4097)]
    assert all(w >= n for n, w in enumerate(widths, start=1))
    assert all(a <= b for a, b in zip(widths, widths[1:]))
    assert all(w <= 1.25 * n for n, w in enumerate(widths, start=1) if n > 64)
    assert len(set(widths[64:256])) == 8  # 80 ... 256: four widths per doubling


def test_100_steps_of_gsm8k_length_prompts_use_at_most_3_prompt_widths():
    cfg = tiny_config(*GSM8K_LIKE, "rollout.batch_size=16")
    batches = _prompt_lengths(cfg, 100)
    lengths = np.concatenate(batches)
    assert 100 <= np.percentile(lengths, 5) and np.percentile(lengths, 95) <= 256  # GSM8K-shaped
    widths = [prompt_slots(int(b.max())) for b in batches]
    assert len(set(widths)) <= 3, sorted(set(widths))
    # The buckets' own cost: slots past each batch's longest prompt, per real prompt token.
    bucket_pad = sum((w - b.max()) * len(b) for w, b in zip(widths, batches)) / lengths.sum()
    by_batch_max = sum((b.max() - b) .sum() for b in batches) / lengths.sum()  # even an exact width pays this
    assert bucket_pad < 0.1 and bucket_pad < by_batch_max


def test_compiles_are_counted_per_phase_one_program_per_prompt_width(tmp_path):
    from tasks.session import TrainSession

    # max_new_tokens=5: a sampler spec no other test compiles, so every width is a new program here.
    cfg = tiny_config(*GSM8K_LIKE, "rollout.batch_size=4", "rollout.max_new_tokens=5", "train.steps=2")
    session = TrainSession.open(cfg, tmp_path / "run")
    try:
        mark = compiles.mark()
        for step in range(2):  # longest prompts 219 and 252: widths 224 and 256
            with compiles.in_phase("rollout"):
                table = session.rollout(step)
            rewards, _ = phases.reward_table(table, cfg.rewards)
            advantages, _ = phases.advantage_table(rewards, cfg.rollout.n, "grpo", 1e-4, 1, None)
            with compiles.in_phase("update"):
                session.update(step, table, advantages)
        table = compiles.by_phase(compiles.since(mark))
    finally:
        session.close()
    widths = {prompt_slots(int(b.max())) for b in _prompt_lengths(cfg, 2)}
    assert len(widths) == 2
    assert table["rollout"]["programs"]["jit(_generate_impl)"] == len(widths)
    assert table["update"]["programs"]["jit(train_step)"] == len(widths)
    assert table["update"]["seconds"] > 0 and "jit(_generate_impl)" not in table["update"]["programs"]


@pytest.mark.parametrize("longest, width", [(5, 8), (64, 64), (65, 80), (75, 80), (129, 160), (250, 256), (257, 320)])
def test_prompt_widths(longest, width):
    assert prompt_slots(longest) == width
