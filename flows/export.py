"""`grpo export`: a run's checkpoint as an HF-format model directory people can use.

DEST gets config.json, the weights as safetensors (sharded with an index past
`max_shard_bytes`), the tokenizer with the chat template the run trained with,
generation_config.json (the run's stop tokens and sampling settings), the run's config
(`grpo_run_config.yaml`) and a README.md model card written from the run.

Everything is written to a temporary sibling of DEST and swapped in at the end, so an
export that fails or is interrupted never leaves a half-written DEST, and an existing
DEST is only replaced (with --force) by a complete one.

With `adapter` (a LoRA run), DEST is a PEFT adapter directory instead:
adapter_config.json and adapter_model.safetensors, which
`peft.PeftModel.from_pretrained(base, DEST)` loads onto the run's base model.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax

from flows.observe import params_sha256, reward_trend
from grpo_core import lora as lora_lib
from grpo_core.errors import UserError, writable_dir
from grpo_core.models.loading import save_pretrained
from tasks.run_checkpoint import CONFIG_FILE, RunCheckpoint, checkpoint_step, load_run_checkpoint, run_config

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' long-standing "5GB"
RUN_CONFIG_COPY = "grpo_run_config.yaml"


@dataclasses.dataclass
class ExportResult:
    dest: Path
    step: int
    dtype: str
    params_sha256: str
    files: list[str]


def check_dest(dest: Path, run_dir: Path, force: bool) -> None:
    """DEST must be a new or empty directory (any directory with --force) outside the run."""
    if dest.exists() and not dest.is_dir():
        raise UserError(f"DEST {dest} is a file; pass a directory path for the exported model.")
    resolved, run = dest.resolve(), run_dir.resolve()
    if resolved == run or resolved in run.parents or run in resolved.parents:
        raise UserError(f"DEST {dest} overlaps the run directory {run_dir}; export to a directory outside the run.")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UserError(f"DEST {dest} exists and is not empty; pass --force to replace it, or choose a new DEST.")
    writable_dir(dest.parent, "the directory holding DEST")


def hf_tokenizer(chat_tokenizer):
    """The transformers tokenizer to save, carrying the chat template the run trained with;
    None for the byte tokenizer of test models (it has no tokenizer.json form)."""
    backend = chat_tokenizer.backend
    if not hasattr(backend, "save_pretrained"):
        return None
    backend.chat_template = chat_tokenizer.chat_template
    return backend


def generation_config(ckpt: RunCheckpoint) -> dict:
    """HF generation defaults: the run's stop tokens and the sampling it was trained with.

    top_k is written even when off (0): transformers otherwise applies its default of 50.
    """
    cfg, rollout = ckpt.model.config, ckpt.config.rollout
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": list(cfg.eos_token_ids),
           "pad_token_id": cfg.pad_token_id, "do_sample": rollout.temperature > 0}
    if rollout.temperature > 0:
        gen.update(temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k)
    return gen


def _metrics(run_dir: Path, steps: int) -> dict[int, dict]:
    """metrics.jsonl records of the steps the checkpoint has trained on."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {r["step"]: r for r in records if r["step"] < steps}


def model_card(ckpt: RunCheckpoint, digest: str, dtype: str, command: str | None) -> str:
    """README.md for DEST: what was trained from what, how, with which result."""
    cfg, records = ckpt.config, _metrics(ckpt.run_dir, ckpt.step)
    trend = reward_trend(records)
    rewards = ", ".join(f"{r.name} x {r.weight:g}" for r in cfg.rewards)
    rows = [
        ("base model", f"`{cfg.model.name_or_path}`"),
        ("training", f"{ckpt.step} of {cfg.train.steps} GRPO steps ({cfg.rollout.batch_size} prompts x "
                     f"{cfg.rollout.n} samples per step, {cfg.advantage.estimator} advantages, "
                     f"{cfg.train.optimizer.name})"),
        ("data", f"`{cfg.data.source}`" + (f" (difficulty {cfg.data.difficulty})" if cfg.data.source == "synthetic" else "")),
        ("rewards", rewards),
    ]
    if trend:
        rows.append(("correctness reward, first 5 -> last 5 steps",
                     f"{trend['first5_correct_mean']:.3f} -> {trend['last5_correct_mean']:.3f}"))
    evals = [r["eval_accuracy"] for _, r in sorted(records.items()) if "eval_accuracy" in r]
    if evals:
        rows.append(("greedy eval accuracy, last eval", f"{evals[-1]:.3f}"))
    rows += [("params sha256 (as trained)", f"`{digest}`"), ("exported dtype", dtype),
             ("run directory", f"`{ckpt.run_dir}`")]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    system = f"\nTraining prompts used this system message: \"{cfg.data.system_prompt}\"\n" if cfg.data.system_prompt else ""
    made_by = f"\nExported with `{command}`.\n" if command else ""
    return (f"---\nlibrary_name: transformers\ntags: [grpo, reinforcement-learning, grpo-flows]\n---\n\n"
            f"# {ckpt.run_dir.resolve().name}: `{cfg.model.name_or_path}` after {ckpt.step} GRPO steps\n\n"
            f"Trained with grpo-flows; the run's full config is `{RUN_CONFIG_COPY}` "
            f"(`grpo train --config {RUN_CONFIG_COPY}` repeats the run).\n\n"
            f"| | |\n|---|---|\n{table}\n{system}{made_by}")


def _sibling(dest: Path, kind: str) -> Path:
    """A fresh hidden sibling of dest; made by mkdir, so it gets the usual permissions
    (mkdtemp's 0700 would follow the files into DEST)."""
    path = dest.parent / f".{dest.name}.{kind}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)  # left by an export killed earlier in this pid
    path.mkdir()
    return path


def _swap_in(staged: Path, dest: Path) -> None:
    """Make `staged` be `dest`; an existing dest is moved aside first and deleted last."""
    if not dest.exists():
        staged.rename(dest)
        return
    old = _sibling(dest, "old")
    dest.rename(old / dest.name)
    staged.rename(dest)
    shutil.rmtree(old)


def export_run(run_dir: str | Path, dest: str | Path, step: int | None = None, dtype: str | None = None,
               force: bool = False, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
               command: str | None = None, adapter: bool = False) -> ExportResult:
    """Write checkpoint `step` (default: the newest complete one) of `run_dir` to `dest`.

    dtype: float32 or bfloat16 (default: the dtype the run trained in). adapter: write the
    LoRA adapters in PEFT's format instead of the merged model.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    cfg = run_config(run_dir)  # RUN_DIR's errors first, then DEST's, then the (slower) restore
    if adapter and lora_lib.spec_from_config(cfg.model.lora) is None:
        raise UserError(f"--adapter: run directory {str(run_dir)!r} trained every weight (model.lora is off); "
                        "export it without --adapter.")
    step = checkpoint_step(run_dir, step)
    check_dest(dest, run_dir, force)
    ckpt = load_run_checkpoint(run_dir, step)
    if adapter:
        return _export_adapter(ckpt, dest)
    digest = params_sha256(ckpt.model.params)
    dtype = dtype or ckpt.config.model.dtype
    params = jax.tree.map(lambda x: x.astype(dtype), ckpt.model.params)
    staged = _sibling(dest, "export")
    try:
        save_pretrained(params, ckpt.model.config, staged, tokenizer=hf_tokenizer(ckpt.model.tokenizer),
                        max_shard_bytes=max_shard_bytes)
        (staged / "generation_config.json").write_text(json.dumps(generation_config(ckpt), indent=2) + "\n")
        shutil.copyfile(run_dir / CONFIG_FILE, staged / RUN_CONFIG_COPY)
        (staged / "README.md").write_text(model_card(ckpt, digest, dtype, command))
        files = sorted(p.name for p in staged.iterdir())
        _swap_in(staged, dest)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone already after a successful swap
    return ExportResult(dest, ckpt.step, dtype, digest, files)


def _export_adapter(ckpt: RunCheckpoint, dest: Path) -> ExportResult:
    """DEST as a PEFT adapter directory (float32 adapters, the run's config beside them)."""
    from safetensors.numpy import save_file

    spec = lora_lib.spec_from_config(ckpt.config.model.lora)
    digest = params_sha256(ckpt.adapters)
    staged = _sibling(dest, "export")
    try:
        config = lora_lib.peft_config(spec, ckpt.config.model.name_or_path)
        (staged / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(lora_lib.peft_tensors(ckpt.adapters), str(staged / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        shutil.copyfile(ckpt.run_dir / CONFIG_FILE, staged / RUN_CONFIG_COPY)
        files = sorted(p.name for p in staged.iterdir())
        _swap_in(staged, dest)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return ExportResult(dest, ckpt.step, "float32", digest, files)
