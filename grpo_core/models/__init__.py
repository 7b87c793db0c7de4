"""Llama / Qwen2 / Qwen3 decoder: config presets, pure-function forward, and the `Model` wrapper."""
from grpo_core.models.config import PRESETS, ModelConfig
from grpo_core.models.model import Model

__all__ = ["PRESETS", "Model", "ModelConfig"]
