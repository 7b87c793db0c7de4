"""`model:` section: which weights to train and how to hold them."""
from typing import Literal

from pydantic import Field

from schemas.base import NEW_OPTION, Section

LoraTarget = Literal["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"]


class LoraSection(Section):
    """Low-rank adapters on the projections; the base weights stay frozen (grpo_core/lora.py)."""

    rank: int = Field(16, ge=0, le=4096, description="Adapter rank r; 0 trains every weight (full fine-tuning).")
    alpha: float = Field(32.0, gt=0.0, le=1e6, description="Adapter scale numerator: the update is (alpha / rank) B A, as PEFT.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability on the adapters' input during updates (PEFT's lora_dropout).")
    targets: list[LoraTarget] = Field(
        ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"], min_length=1, max_length=7,
        description="Projections that get adapters, by params name: wq, wk, wv, wo (attention q/k/v/o) "
        "and w_gate, w_up, w_down (MLP); default all seven.",
    )
    base_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="dtype of the frozen base weights; auto = bfloat16 on TPU/GPU meshes, model.dtype on CPU.",
    )


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
    lora: LoraSection | None = Field(
        None, json_schema_extra=NEW_OPTION,
        description="Train low-rank adapters instead of every weight (null or rank 0: full fine-tuning).",
    )


def base_dtype(section, platform: str) -> str:
    """The dtype a run holds its (base) weights in on `platform` (tpu, gpu, cpu): with LoRA,
    model.lora.base_dtype (auto: bfloat16 off CPU); the session, the memory estimate and the
    ahead-of-time compile all read it here."""
    lora = section.lora
    if lora is None or lora.rank == 0:
        return section.dtype
    if lora.base_dtype != "auto":
        return lora.base_dtype
    return section.dtype if platform == "cpu" else "bfloat16"
