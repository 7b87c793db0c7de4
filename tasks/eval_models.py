"""What `grpo eval --model M` names, and how to load it.

M is a run directory of `grpo train` (its newest complete checkpoint), an HF-format
directory (config.json + safetensors, e.g. from `grpo export`) or a pullable model name
(smollm2-135m-instruct). A `ModelSource` records which, plus a
fingerprint of the weights that the eval cache key includes: a new checkpoint or
rewritten weights mean a new eval, the same weights a cache hit. The fingerprint uses
file sizes and modification times, not contents, so a rerun does not read gigabytes
just to find out it is cached.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import jax
from pydantic import BaseModel, Field

from grpo_core.errors import UserError
from grpo_core.models.hub import PULLABLE_MODELS
from grpo_core.models.model import Model
from schemas.run import RunConfig
from tasks.model_source import model_directory, resolve_model
from tasks.run_checkpoint import CHECKPOINT_DIR, checkpoint_step, is_run_dir, load_run_checkpoint


class ModelSource(BaseModel):
    """One --model of an eval, resolved."""

    ref: str = Field(description="The --model value as given.")
    name: str = Field(description="Short name for tables and file names.")
    kind: Literal["run", "hf"] = Field(description="run: a grpo train run directory; hf: an HF-format directory.")
    path: str = Field(description="The run directory or HF-format directory.")
    step: int | None = Field(None, description="Checkpoint of a run (updates applied).")
    fingerprint: str = Field(description="sha256 over what identifies the weights (paths, sizes, mtimes).")


def _stat_digest(*parts, files: list[Path]) -> str:
    body = [*map(str, parts), *[(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(files)]]
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()


def resolve_source(ref: str) -> ModelSource:
    """The `ModelSource` of `--model ref`; pulls a pullable model on first use."""
    path = Path(ref).expanduser()
    if is_run_dir(path):
        step = checkpoint_step(path)
        step_dir = path / CHECKPOINT_DIR / str(step)
        files = [p for p in step_dir.rglob("*") if p.is_file()]
        return ModelSource(ref=ref, name=path.resolve().name, kind="run", path=str(path), step=step,
                           fingerprint=_stat_digest(path.resolve(), step, files=files))
    if ref not in PULLABLE_MODELS and not (path / "config.json").is_file():
        what = "the directory has neither a run's config.yaml nor an HF config.json" if path.is_dir() else "no such directory"
        raise UserError(f"--model {ref}: {what}; pass a `grpo train` run directory, an HF-format model directory "
                        f"or a pullable model ({', '.join(PULLABLE_MODELS)}).")
    directory = model_directory(ref)
    files = [p for p in directory.iterdir() if p.is_file()]
    name = ref if ref in PULLABLE_MODELS else directory.resolve().name
    return ModelSource(ref=ref, name=name, kind="hf", path=str(directory),
                       fingerprint=_stat_digest(directory.resolve(), files=files))


def load_eval_model(source: ModelSource, cfg: RunConfig, mesh) -> Model:
    """The model of `source` in the eval config's dtype, params on `mesh`.

    A run brings its own tokenizer and chat template (what it trained with); an HF
    directory is read like `model.name_or_path` of the eval config, so model.tokenizer and
    data.chat_template apply to it as in training.
    """
    if source.kind == "run":
        model = load_run_checkpoint(source.path, source.step, mesh).model
        params = jax.tree.map(lambda x: x.astype(cfg.model.dtype), model.params)
        return Model(model.config, params, model.tokenizer)
    section = cfg.model.model_copy(update={"name_or_path": source.path, "init": "pretrained"})
    return resolve_model(section, cfg.train.seed, mesh, cfg.data.chat_template)
