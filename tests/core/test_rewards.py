"""Reward functions on real GSM8K-style strings, the weighted combination, threads."""
import concurrent.futures
import logging

import numpy as np
import pytest

from grpo_core import rewards
from grpo_core.errors import UserError
from grpo_core.rewards import (
    DEFAULT_REWARD_SPECS,
    REWARD_FUNCTIONS,
    compute_rewards,
    gsm8k_correct,
    register_reward,
    tag_count,
    think_answer_format,
)

ITEM = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half "
                "as many clips in May. How many clips did Natalia sell altogether?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}


def item(answer: str) -> dict:
    return {"question": "q", "answer": f"Some reasoning.\n#### {answer}"}


@pytest.mark.parametrize("answer, completion, expected", [
    ("72", "She sold 48 + 24 = 72 clips.", 1.0),                       # last number
    ("72", "She sold 48 + 24 = 73 clips.", 0.0),                       # wrong
    ("72", "<think>\n48/2=24, 48+24=72\n</think>\n<answer>\n72\n</answer>", 1.0),
    ("72", "<think>\nmaybe 72\n</think>\n<answer>\n71\n</answer>", 0.0),  # tag wins over text
    ("72", "So the total is \\boxed{72}. Check: 48 and 24.", 1.0),     # boxed wins over last
    ("1,200", "The total cost is $1,200.", 1.0),                       # commas both sides
    ("1200", "He earns 1,200 dollars.", 1.0),                          # commas + units
    ("5000", "That is \\boxed{\\$5,000}", 1.0),                        # boxed currency
    ("-8", "The temperature dropped to -8 degrees.", 1.0),             # negative
    ("8", "The temperature dropped to -8 degrees.", 0.0),              # sign matters
    ("-3", "It went from 5 to \u22123.", 1.0),                         # unicode minus
    ("12.5", "Each costs 12.50 dollars.", 1.0),                        # decimals
    ("18", "Answer: 18.0", 1.0),
    ("0.75", "<answer>\\frac{3}{4}</answer>", 1.0),                    # latex fraction
    ("0.75", "She drinks 3/4 of the bottle.", 1.0),                    # plain fraction
    ("72", "I do not know.", 0.0),                                     # no number
    ("72", "", 0.0),
    ("12", "The pages 10-12 are read.", 1.0),                          # range, not -12
])
def test_gsm8k_correct(answer, completion, expected):
    assert gsm8k_correct(item(answer), completion) == expected


def test_gsm8k_correct_on_real_item():
    assert gsm8k_correct(ITEM, "48/2 = 24 in May, so 48 + 24 = 72.") == 1.0
    assert gsm8k_correct(ITEM, "48/2 = 24 in May, so 48 + 24 = 96.") == 0.0


def test_gsm8k_correct_from_worker_threads():
    # math_verify's default signal-based timeout raises outside the main thread.
    cases = [(item("72"), "so 72", 1.0), (item("1,200"), "$1,200", 1.0),
             (item("0.75"), "\\boxed{\\frac{3}{4}}", 1.0), (item("5"), "6", 0.0)] * 4
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda c: gsm8k_correct(c[0], c[1]), cases))
    assert got == [c[2] for c in cases]


def test_compute_rewards_from_worker_thread_does_not_swallow_thread_errors(caplog):
    completions = ["<think>\nx\n</think>\n<answer>\n72\n</answer>"]
    with caplog.at_level(logging.WARNING, logger="grpo_core.rewards"):
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            total, _ = pool.submit(compute_rewards, [ITEM], completions).result()
    assert total.tolist() == [2.0]
    assert not [r for r in caplog.records if r.name == "grpo_core.rewards"]


@pytest.mark.parametrize("completion, expected", [
    ("<think>\nreason\n</think>\n<answer>\n72\n</answer>", 1.0),
    ("<think>a\nb</think>\n<answer>72</answer>", 1.0),           # DOTALL across lines
    ("<think>x</think><answer>72</answer>", 0.0),                 # newline required
    ("<think>x</think>\n<answer>72</answer> trailing", 0.0),      # anchored end
    ("preamble <think>x</think>\n<answer>72</answer>", 0.0),      # anchored start
    ("72", 0.0),
])
def test_think_answer_format(completion, expected):
    assert think_answer_format(ITEM, completion) == expected


@pytest.mark.parametrize("completion, expected", [
    ("<think>\nr\n</think>\n<answer>\n72\n</answer>", 1.0),
    ("<think>\nr\n</think>\n<answer>\n72", 0.75),                         # no closing answer
    ("<think>\nr\n</think>\n<answer>\n72\n</answer>\n</answer>", 0.75),   # twice: no credit
    ("<think>r</think><answer>72</answer>", 0.0),                         # no newlines
    ("<think>\nr", 0.25),
])
def test_tag_count(completion, expected):
    assert tag_count(ITEM, completion) == expected


def test_compute_rewards_weights_and_per_function():
    completions = [
        "<think>\n48+24=72\n</think>\n<answer>\n72\n</answer>",   # 1 + .5*1 + .5*1
        "<think>\n48+24=70\n</think>\n<answer>\n70\n</answer>",   # 0 + .5 + .5
        "72",                                                      # 1 + 0 + 0
        "<think>\nr",                                              # 0 + 0 + .5*.25
    ]
    total, per_fn = compute_rewards([ITEM] * 4, completions, DEFAULT_REWARD_SPECS)
    assert total.dtype == np.float32
    np.testing.assert_allclose(total, [2.0, 1.0, 1.0, 0.125])
    np.testing.assert_allclose(per_fn["gsm8k_correct"], [1, 0, 1, 0])
    np.testing.assert_allclose(per_fn["tag_count"], [1, 1, 0, 0.25])
    mapping_specs = [{"name": "gsm8k_correct", "weight": 2.0}]
    total, per_fn = compute_rewards([ITEM] * 4, completions, mapping_specs)
    np.testing.assert_allclose(total, [2, 0, 2, 0])
    assert list(per_fn) == ["gsm8k_correct"]


def test_raising_reward_scores_zero_and_logs(caplog, monkeypatch):
    def boom(item, completion):
        if "bad" in completion:
            raise RuntimeError("broken reward")
        return 1.0

    monkeypatch.setitem(REWARD_FUNCTIONS, "boom", boom)
    with caplog.at_level(logging.WARNING, logger="grpo_core.rewards"):
        total, per_fn = compute_rewards([ITEM] * 2, ["ok", "bad"], [("boom", 1.0)])
    np.testing.assert_allclose(per_fn["boom"], [1.0, 0.0])
    assert "broken reward" in caplog.text and "sample 1" in caplog.text


def test_missing_ground_truth_scores_zero_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="grpo_core.rewards"):
        total, _ = compute_rewards([{"question": "q", "answer": "no marker"}], ["72"],
                                   [("gsm8k_correct", 1.0)])
    assert total.tolist() == [0.0] and "####" in caplog.text


def test_unknown_reward_name_is_a_user_error():
    with pytest.raises(UserError, match="unknown reward function 'nope'"):
        compute_rewards([ITEM], ["x"], [("nope", 1.0)])


def test_register_twice_is_rejected():
    with pytest.raises(ValueError, match="twice"):
        register_reward("tag_count")(lambda item, completion: 0.0)
    assert REWARD_FUNCTIONS["tag_count"] is rewards.tag_count


def test_states_number_rewards_any_number():
    from grpo_core.rewards import states_number

    item = {"question": "q", "answer": "#### 5"}
    assert states_number(item, "I think it is 12 apples") == 1.0
    assert states_number(item, "no idea at all") == 0.0
