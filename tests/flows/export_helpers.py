"""Tiny run directories for the export and eval tests, without running a training loop.

`make_run` writes what `grpo train` leaves behind (config.yaml, orbax checkpoints with
params, optimizer state and sidecar, metrics.jsonl) through the same code the session
uses, with params that differ per checkpoint so the tests can tell which one was read.
The model has a real HF tokenizer directory (bytes + ChatML special tokens), so exports
carry tokenizer files and a chat template.
"""
import json
from pathlib import Path

import jax
import numpy as np

from grpo_core.checkpoint import Checkpoints
from grpo_core.optim import build_optimizer
from schemas.loading import config_to_yaml
from tasks.model_source import resolve_model
from train_helpers import tiny_config

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer_dir(path: Path) -> Path:
    """A byte-level BPE tokenizer (no merges) with ChatML specials, saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate([*specials, *sorted(pre_tokenizers.ByteLevel.alphabet())])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", chat_template=CHATML,
                                        additional_special_tokens=specials[1:])
    tokenizer.save_pretrained(str(path))
    return path


def _perturbed(params, seed: int):
    """Every leaf moved by seeded noise, so each checkpoint (and norms, biases) is distinct."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def make_run(root: Path, preset: str, steps=(1, 2), *overrides: str) -> tuple[Path, dict]:
    """A run directory of `preset` with checkpoints `steps`; returns (run_dir, {step: params})."""
    tokenizer = byte_tokenizer_dir(root / "tokenizer")
    cfg = tiny_config(f"model.name_or_path={preset}", f"model.tokenizer={tokenizer}", *overrides)
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    model = resolve_model(cfg.model, cfg.train.seed, None, cfg.data.chat_template)
    opt_state = build_optimizer(cfg.train.optimizer, cfg.train.steps).init(model.params)
    checkpoints, saved = Checkpoints(run_dir / "checkpoints", keep=len(steps)), {}
    for step in steps:
        saved[step] = _perturbed(model.params, step)
        checkpoints.save(step, saved[step], opt_state, {"next_step": step})
    checkpoints.close()
    records = [{"step": s, "reward_gsm8k_correct_mean": 0.1 * s} for s in range(max(steps))]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir, saved


def host(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]
