"""`model:` section: which weights to train and how to hold them."""
from typing import Literal

from pydantic import Field

from schemas.base import Section


class ModelSection(Section):
    name_or_path: str = Field(
        "smollm2-135m-instruct",
        min_length=1,
        description="A pullable model name (smollm2-135m-instruct), an architecture preset "
        "(tiny-llama, tiny-qwen2, qwen2.5-0.5b, ...; random weights, needs init=random) "
        "or the path of an HF-format directory (config.json + *.safetensors).",
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="pretrained: load weights; random: seeded random init of the preset's shape."
    )
    tokenizer: str | None = Field(
        None,
        description="Tokenizer: null = the model directory's own; 'byte' = built-in byte-level "
        "tokenizer (for tiny random models); or a directory with tokenizer.json.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Parameter and activation dtype (softmax, norms and logits stay float32)."
    )
    remat: bool = Field(False, description="Rematerialise each decoder layer in the update (less memory, ~30% more compute).")
