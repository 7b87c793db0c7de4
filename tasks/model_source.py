"""Turn the `model:` config section into a loaded `Model` (weights + tokenizer).

Sources, in order: a random init of an architecture preset (init=random), a pullable
model name (smollm2-135m-instruct, converted once into the local cache), a local
HF-format directory, or an HF hub id (org/name; needs network, e.g. on a TPU VM).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import jax
import jax.numpy as jnp

from grpo_core.errors import UserError
from grpo_core.models.config import PRESETS, ModelConfig
from grpo_core.models.decoder import init_params, param_logical_axes
from grpo_core.models.hub import PULLABLE_MODELS
from grpo_core.models.loading import load_pretrained, read_config
from grpo_core.models.model import Model
from grpo_core.sharding import shard_params
from grpo_core.tokenizer import ChatTokenizer, make_chat_tokenizer

logger = logging.getLogger("grpo_flows.models")


def _fit_config(cfg, tokenizer):
    """Stop on every turn-end id the tokenizer knows; grow a random model's vocab to fit it."""
    return dataclasses.replace(
        cfg,
        vocab_size=max(cfg.vocab_size, tokenizer.vocab_size),
        eos_token_ids=tuple(dict.fromkeys((*cfg.eos_token_ids, *tokenizer.eos_token_ids))),
        pad_token_id=tokenizer.pad_token_id if cfg.pad_token_id is None else cfg.pad_token_id,
    )


def _check_random(section) -> None:
    if section.name_or_path not in PRESETS:
        raise UserError(
            f"model.name_or_path={section.name_or_path!r} is not an architecture preset; with model.init=random "
            f"use one of {sorted(PRESETS)}"
        )
    if section.tokenizer is None:
        raise UserError("model.init=random needs model.tokenizer ('byte' or a directory with tokenizer.json)")


def check_model_source(section) -> None:
    """Fail early (before any Prefect start-up) on a model that cannot be found; pulls once."""
    if section.init == "random":
        _check_random(section)
    else:
        model_directory(section.name_or_path)
    if section.tokenizer not in (None, "byte"):
        make_chat_tokenizer(section.tokenizer)


def _hub_snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:  # offline, unknown repo, gated repo ...
        raise UserError(
            f"could not download model.name_or_path={repo_id!r} from the model hub ({type(exc).__name__}); "
            "use a local HF-format directory or smollm2-135m-instruct"
        ) from None


def model_directory(name: str) -> Path:
    """The HF-format directory for a pullable name, a local path or a hub id."""
    if name in PULLABLE_MODELS:
        from tasks.models import pull_model

        return pull_model(name, progress=logger.debug)  # a training run shows the download line only
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return _hub_snapshot(name)
    raise UserError(
        f"model.name_or_path={name!r} is neither a pullable model ({', '.join(PULLABLE_MODELS)}), "
        "an existing directory nor an org/name hub id"
    )


def _pretrained_spec(directory: Path, tokenizer_spec, chat_template) -> tuple[ModelConfig, ChatTokenizer]:
    cfg = read_config(directory)
    tokenizer = make_chat_tokenizer(tokenizer_spec, directory, chat_template)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(
            f"model.tokenizer has {tokenizer.vocab_size} tokens but the model's embedding only "
            f"{cfg.vocab_size}; use the model's own tokenizer (model.tokenizer: null)"
        )
    return _fit_config(cfg, tokenizer), tokenizer


def model_spec(section, chat_template: str | None = None) -> tuple[ModelConfig, ChatTokenizer]:
    """The architecture (vocab, eos and pad fitted to the tokenizer) and the `ChatTokenizer`
    of a `model:` section, without its weights: what a checkpoint of that model holds."""
    if section.init == "random":
        _check_random(section)
        tokenizer = make_chat_tokenizer(section.tokenizer, chat_template=chat_template)
        return _fit_config(PRESETS[section.name_or_path], tokenizer), tokenizer
    return _pretrained_spec(model_directory(section.name_or_path), section.tokenizer, chat_template)


def resolve_model(section, seed: int, mesh, chat_template: str | None = None) -> Model:
    """The `Model` the config asks for, params sharded over `mesh`, with a `ChatTokenizer`."""
    if section.init == "random":
        cfg, tokenizer = model_spec(section, chat_template)
        params = init_params(cfg, jax.random.PRNGKey(seed), dtype=getattr(jnp, section.dtype))
        return Model(cfg, shard_params(params, param_logical_axes(cfg), mesh), tokenizer)
    directory = model_directory(section.name_or_path)  # once: a hub id downloads here
    cfg, tokenizer = _pretrained_spec(directory, section.tokenizer, chat_template)
    model = load_pretrained(directory, dtype=section.dtype, mesh=mesh)
    return Model(cfg, model.params, tokenizer)
