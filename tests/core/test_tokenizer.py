"""grpo_core.tokenizer: ByteTokenizer, the ChatTokenizer adapter over HF and byte, prompt ids."""
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from grpo_core.errors import UserError
from grpo_core.tokenizer import ByteTokenizer, ChatTokenizer, build_prompt_ids, make_chat_tokenizer

QWEN_LIKE_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}]


def tiny_hf_tokenizer(eos="<|endoftext|>", template=QWEN_LIKE_TEMPLATE) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer over single characters (no merges), Qwen-style specials."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(specials + sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, additional_special_tokens=specials)
    tokenizer.chat_template = template
    return tokenizer


# ---- ByteTokenizer ------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_text_and_specials():
    tok = ByteTokenizer()
    assert tok.vocab_size == len(tok) == 261
    assert tok.encode("hi") == [104, 105]
    ids = tok.encode("<|im_start|>user\nnaïve 🙂<|im_end|>")
    assert ids[0] == 259 and ids[-1] == 260 and tok.eos_token_id == 258 and tok.pad_token_id == 256
    assert tok.decode(ids) == "user\nnaïve 🙂"
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nnaïve 🙂<|im_end|>"
    assert tok.encode("a", add_special_tokens=True) == [tok.bos_token_id, 97]


def test_byte_tokenizer_decode_never_raises():
    tok = ByteTokenizer()
    assert tok.decode([0xFF, 0xC3, 104]) == "\ufffd\ufffdh"
    assert tok.decode([0xF0, 0x9F, 260, 104, 9999]) == "\ufffdh\ufffd"  # a cut multi-byte char, an unknown id


def test_byte_tokenizer_renders_chatml():
    text = ByteTokenizer().apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )


# ---- ChatTokenizer over both backends --------------------------------------------------------


@pytest.mark.parametrize("backend", ["byte", "hf"])
def test_adapter_presents_one_interface(backend):
    tok = ChatTokenizer(ByteTokenizer() if backend == "byte" else tiny_hf_tokenizer())
    text = tok.apply_chat(MESSAGES)
    assert text.endswith("<|im_start|>assistant\n") and "What is 2+3?" in text
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert ids[0] == tok.backend.convert_tokens_to_ids("<|im_start|>")  # specials are single tokens
    assert tok.decode(ids) == "system\nBe brief.\nuser\nWhat is 2+3?\nassistant\n"
    assert tok.decode(tok.encode("Ünïcode 12,345")) == "Ünïcode 12,345"
    assert tok.backend.convert_tokens_to_ids("<|im_end|>") in tok.eos_token_ids
    assert isinstance(tok.pad_token_id, int)


def test_hf_eos_ids_include_the_turn_end_token_of_the_template():
    tok = ChatTokenizer(tiny_hf_tokenizer(eos="<|endoftext|>"))
    im_end, endoftext = (tok.backend.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    assert tok.eos_token_ids == (endoftext, im_end)
    assert tok.pad_token_id == endoftext  # no pad token: fall back to the first eos id
    assert tok.vocab_size == len(tok.backend)


def test_eos_ids_follow_an_override_template_without_im_end():
    plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    tok = ChatTokenizer(tiny_hf_tokenizer(eos="<|endoftext|>", template=None), chat_template=plain)
    assert tok.eos_token_ids == (tok.backend.convert_tokens_to_ids("<|endoftext|>"),)
    assert tok.apply_chat(MESSAGES, add_generation_prompt=False) == "system: Be brief.\nuser: What is 2+3?\n"


def test_apply_chat_call_override_and_missing_template():
    tok = ChatTokenizer(tiny_hf_tokenizer(template=None))
    with pytest.raises(UserError, match="data.chat_template"):
        tok.apply_chat(MESSAGES)
    assert tok.apply_chat(MESSAGES[1:], chat_template="Q: {{ messages[0]['content'] }}") == "Q: What is 2+3?"


def test_make_chat_tokenizer_from_spec(tmp_path):
    assert isinstance(make_chat_tokenizer("byte").backend, ByteTokenizer)
    tiny_hf_tokenizer().save_pretrained(tmp_path)
    from_dir = make_chat_tokenizer(None, model_dir=tmp_path)
    assert from_dir.apply_chat(MESSAGES) == ChatTokenizer(tiny_hf_tokenizer()).apply_chat(MESSAGES)
    assert make_chat_tokenizer(str(tmp_path)).eos_token_ids == from_dir.eos_token_ids
    with pytest.raises(UserError, match="tokenizer.json"):
        make_chat_tokenizer(None, model_dir=tmp_path / "nowhere")


# ---- build_prompt_ids -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["byte", "hf"])
def test_build_prompt_ids_renders_the_chat(backend):
    tok = ChatTokenizer(ByteTokenizer() if backend == "byte" else tiny_hf_tokenizer())
    ids = build_prompt_ids(tok, "What is 2+3?", "Be brief.", None, max_prompt_tokens=1000)
    assert ids == tok.encode(tok.apply_chat(MESSAGES))
    no_system = build_prompt_ids(tok, "What is 2+3?", None, None, max_prompt_tokens=1000)
    assert tok.decode(no_system) == "user\nWhat is 2+3?\nassistant\n"


def test_build_prompt_ids_cuts_from_the_left():
    tok = ChatTokenizer(ByteTokenizer())
    full = build_prompt_ids(tok, "x" * 50, "Be brief.", None, max_prompt_tokens=1000)
    cut = build_prompt_ids(tok, "x" * 50, "Be brief.", None, max_prompt_tokens=20)
    assert cut == full[-20:] and tok.decode(cut).endswith("assistant\n")
    templated = build_prompt_ids(tok, "hi", None, "Q: {{ messages[-1]['content'] }}\nA:", max_prompt_tokens=1000)
    assert tok.decode(templated) == "Q: hi\nA:"
