"""What the shipped rewards see from a Qwen3 checkpoint, with thinking and without.

Qwen3's chat template leaves thinking on unless `enable_thinking=False` is rendered; then it
writes an empty `<think>\\n\\n</think>\\n\\n` into the prompt and the completion is the answer
alone. With thinking on, the model opens `<think>` itself: the completion holds the thinking
block, then the answer. Its tokenizer declares `<think>` and `</think>` as added tokens that
are NOT special, so decoding with skip_special_tokens keeps them in the text the rewards get.
"""
import pytest

from grpo_core.rewards import DEFAULT_REWARD_SPECS, compute_rewards, extract_final_answer
from grpo_core.tokenizer import CHATML_TEMPLATE, ChatTokenizer

ITEM = {"question": "A crate holds 6 rows of 7 apples. How many apples?", "answer": "6 * 7 = 42\n#### 42"}
THINKING = "<think>\nSix rows of seven: 6 * 7 = 42. Check: 7 + 7 + 7 + 7 + 7 + 7 = 42.\n</think>\n\n"
# completion -> (gsm8k_correct, think_answer_format, tag_count) under the default rewards.
SEEN = {
    # Thinking on, the answer as Qwen3 writes it after thinking (two newlines, then prose).
    THINKING + "There are $\\boxed{42}$ apples.": (1.0, 0.0, 0.5),
    # Thinking on, following the default system prompt's <answer> tags.
    THINKING + "<answer>42</answer>": (1.0, 0.0, 0.5),
    # Thinking on, in exactly the layout the format rewards ask for.
    "<think>\n6 * 7 = 42\n</think>\n<answer>\n42\n</answer>": (1.0, 1.0, 1.0),
    # Thinking on, cut at max_new_tokens inside the thinking: its last number counts.
    "<think>\nSix rows of seven: 6 * 7 = 42, or is it 6 * 8 = 48": (0.0, 0.0, 0.25),
    # Thinking off: the answer alone.
    "There are 42 apples.": (1.0, 0.0, 0.0),
    "<answer>42</answer>": (1.0, 0.0, 0.0),
}


@pytest.mark.parametrize("completion", list(SEEN))
def test_default_rewards_on_qwen3_completions(completion):
    _, per_function = compute_rewards([ITEM], [completion], DEFAULT_REWARD_SPECS)
    seen = tuple(float(per_function[name][0]) for name, _ in DEFAULT_REWARD_SPECS)
    assert seen == SEEN[completion]


def test_numbers_inside_the_thinking_do_not_count_once_an_answer_follows():
    assert extract_final_answer("<think>\n41? no: 6 * 7 = 42, not 43\n</think>\n\nSo 42.") == "42"
    assert extract_final_answer("<think>\nmaybe 41\n</think>\n\n<answer>42</answer> (not 41)") == "42"


def _qwen3_like_tokenizer():
    """A byte-level BPE tokenizer with Qwen3's kinds of added tokens: <|im_end|> and
    <|endoftext|> special, <think> and </think> not."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(sorted(bytes_to_unicode().values()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=CHATML_TEMPLATE)
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tok.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    return ChatTokenizer(tok)


def test_decoded_completions_keep_the_think_tags():
    tok = _qwen3_like_tokenizer()
    ids = tok.encode(THINKING + "<answer>42</answer><|im_end|>")
    assert tok.backend.convert_tokens_to_ids("<think>") in ids and ids[-1] in tok.eos_token_ids
    assert tok.decode(ids) == THINKING + "<answer>42</answer>"
