"""`data:` section: where prompts come from and how they are rendered."""
from pydantic import Field, field_validator

from schemas.base import Section

DEFAULT_SYSTEM_PROMPT = (
    "Solve the math problem. Think step by step inside <think> </think>, then give only the "
    "final number inside <answer> </answer>."
)


class DataSection(Section):
    source: str = Field(
        "synthetic",
        description="'synthetic' (seeded GSM8K-format arithmetic generator, offline), 'gsm8k' "
        "(openai/gsm8k from the datasets hub) or a local .parquet/.jsonl path with the GSM8K "
        "columns question and answer.",
    )
    split: str = Field("train", description="Split to train on when source is gsm8k.")
    difficulty: int = Field(1, ge=1, le=5, description="Synthetic problems: number of arithmetic operations (1-5).")
    num_train: int = Field(2000, ge=1, le=10_000_000, description="Synthetic problems: size of the training set.")
    num_eval: int = Field(64, ge=0, le=100_000, description="Held-out prompts reserved for eval (taken before training prompts).")
    seed: int = Field(0, ge=0, description="Seed of the generator and of the shuffling.")
    shuffle: bool = Field(True, description="Shuffle the training prompts each epoch (seeded).")
    system_prompt: str | None = Field(DEFAULT_SYSTEM_PROMPT, description="System message of the chat; null for none.")
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the tokenizer's; null = the tokenizer's own."
    )

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value in ("synthetic", "gsm8k") or value.endswith((".parquet", ".jsonl")):
            return value
        raise ValueError("must be 'synthetic', 'gsm8k' or a path ending in .parquet or .jsonl")
