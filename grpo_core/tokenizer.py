"""One small tokenizer interface for the pipeline, over HF tokenizers and a built-in byte one.

The pipeline needs five things from a tokenizer: text -> ids, ids -> text, a chat prompt,
the ids that end a turn, and the pad id. `ChatTokenizer` gives exactly those over either
a transformers `PreTrainedTokenizerFast` (real models) or `ByteTokenizer` (tiny random test
models, which need a tokenizer but have no tokenizer.json). `ByteTokenizer` mimics the
HF methods the adapter calls, so the adapter has no per-backend branches.

Generation must stop where the chat template ends a turn, which is often not the
tokenizer's `eos_token` (Qwen2.5 base: eos <|endoftext|>, turns end in <|im_end|>), so
`eos_token_ids` collects every turn-end token the template uses.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from grpo_core.errors import UserError

__all__ = ["ByteTokenizer", "ChatTokenizer", "build_prompt_ids", "make_chat_tokenizer"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Tokens chat templates use to end a turn or a document; generation stops on any of them.
_TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def render_chat_template(template: str, messages: Sequence[dict], add_generation_prompt: bool, **special) -> str:
    """Render a Jinja chat template the way transformers does (sandboxed, trimmed blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt, **special
    )


class ByteTokenizer:
    """Byte-level tokenizer: ids 0-255 are bytes, then 5 special tokens (vocab_size 261).

    Special token strings inside the text (from the chat template) encode to their ids,
    as with HF tokenizers. Decoding never raises: invalid UTF-8 becomes U+FFFD.
    """

    SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>")

    def __init__(self, chat_template: str = CHATML_TEMPLATE):
        self.chat_template = chat_template
        self._special_ids = {token: 256 + i for i, token in enumerate(self.SPECIAL_TOKENS)}
        self._special_re = re.compile("(" + "|".join(map(re.escape, self.SPECIAL_TOKENS)) + ")")
        self.pad_token_id = self._special_ids["<|pad|>"]
        self.bos_token_id = self._special_ids["<|bos|>"]
        self.eos_token_id = self._special_ids["<|eos|>"]
        self.vocab_size = 256 + len(self.SPECIAL_TOKENS)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """UTF-8 bytes of `text`, special token strings as their ids; optional leading <|bos|>."""
        ids = [self.bos_token_id] if add_special_tokens else []
        for piece in self._special_re.split(text):
            ids.extend([self._special_ids[piece]] if piece in self._special_ids else piece.encode("utf-8"))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special ids dropped (or spelled out), unknown ids as U+FFFD."""
        out, pending = [], bytearray()
        for i in map(int, ids):
            if 0 <= i < 256:
                pending.append(i)
                continue
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            if 256 <= i < self.vocab_size:
                out.append("" if skip_special_tokens else self.SPECIAL_TOKENS[i - 256])
            else:
                out.append("\ufffd")
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._special_ids.get(token)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, chat_template=None):
        """The chat as text (HF signature; only tokenize=False is used by the pipeline)."""
        text = render_chat_template(
            chat_template or self.chat_template, messages, add_generation_prompt,
            bos_token="<|bos|>", eos_token="<|eos|>",
        )
        return self.encode(text) if tokenize else text


class ChatTokenizer:
    """The tokenizer interface the pipeline uses, over an HF fast tokenizer or `ByteTokenizer`.

    chat_template overrides the tokenizer's own (config `data.chat_template`).
    """

    def __init__(self, tokenizer, chat_template: str | None = None):
        self.backend = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.vocab_size = len(tokenizer)
        self.eos_token_ids = self._turn_end_ids()
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.eos_token_ids[0])

    def _token_id(self, token: str) -> int | None:
        """Id of `token` when the vocabulary has it as ONE token, else None."""
        token_id = self.backend.convert_tokens_to_ids(token)
        if token_id is None or token_id == getattr(self.backend, "unk_token_id", None):
            return None  # HF maps unknown tokens to unk (or None when there is no unk token)
        return int(token_id)

    def _turn_end_ids(self) -> tuple[int, ...]:
        """eos plus every turn-end token the chat template uses (or <|endoftext|>), deduplicated."""
        ids = [] if self.backend.eos_token_id is None else [int(self.backend.eos_token_id)]
        template = self.chat_template or ""
        for token in _TURN_END_TOKENS:
            token_id = self._token_id(token)
            if token_id is not None and (token in template or token == "<|endoftext|>"):
                ids.append(token_id)
        if not ids:
            raise UserError("the tokenizer has no eos token and its chat template ends turns with none we know; "
                            "use a tokenizer with an eos_token.")
        return tuple(dict.fromkeys(ids))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no BOS/EOS added: the chat template places its own)."""
        return list(self.backend.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` without special tokens."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=True)

    def apply_chat(
        self, messages: Sequence[dict], add_generation_prompt: bool = True, chat_template: str | None = None
    ) -> str:
        """The chat `messages` ([{"role", "content"}]) rendered as prompt text."""
        template = chat_template or self.chat_template
        if not template:
            raise UserError("the tokenizer has no chat template; set data.chat_template to a Jinja chat template.")
        return self.backend.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=template
        )


def make_chat_tokenizer(
    spec: str | None, model_dir: str | Path | None = None, chat_template: str | None = None
) -> ChatTokenizer:
    """The `ChatTokenizer` for config `model.tokenizer`: None (the model dir's own), 'byte', or a dir."""
    if spec == "byte":
        return ChatTokenizer(ByteTokenizer(), chat_template)
    from grpo_core.models.loading import load_tokenizer  # imports jax: only when an HF tokenizer is wanted

    directory = Path(spec if spec is not None else model_dir or "")
    hf_tokenizer = load_tokenizer(directory)
    if hf_tokenizer is None:
        raise UserError(
            f"{str(directory)!r} has no tokenizer.json; set model.tokenizer to 'byte' or a tokenizer directory."
        )
    return ChatTokenizer(hf_tokenizer, chat_template)


def build_prompt_ids(
    tokenizer: ChatTokenizer,
    question: str,
    system_prompt: str | None,
    chat_template: str | None,
    max_prompt_tokens: int,
) -> list[int]:
    """Prompt token ids of one question as a chat, ending in the assistant generation prompt.

    Too-long prompts lose tokens from the LEFT, so the question's end and the generation
    prompt (what the model continues from) always survive.
    """
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}
    ]
    ids = tokenizer.encode(tokenizer.apply_chat(messages, add_generation_prompt=True, chat_template=chat_template))
    return ids[-max_prompt_tokens:] if len(ids) > max_prompt_tokens else ids
