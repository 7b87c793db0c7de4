"""What a run directory holds, without its model: the lock, the run id, the config check,
and the plan of the run (batch numbers, prompt stream, learning rates per step).

`RunPlan` is enough to name every phase's cache key, so flows/train.py checks a finished
run with it before any model is loaded; `TrainSession` (tasks/session.py) builds on it.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import jax
import numpy as np

from grpo_core.artifacts import atomic_write_bytes
from grpo_core.data import make_prompt_stream
from grpo_core.errors import UserError
from grpo_core.optim import build_lr_schedule
from schemas.loading import read_yaml
from schemas.run import RunConfig
from tasks.device_groups import derive_trainer_batch
from tasks.model_source import check_model_source

RUN_ID_FILE = "run_id"


class RunLock:
    """An exclusive flock on run_dir/run.lock; released by the OS if the process dies."""

    def __init__(self, run_dir: Path, process_index: int = 0):
        self.path = run_dir / ("run.lock" if process_index == 0 else f"run.p{process_index}.lock")
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise UserError(
                f"run directory {run_dir} is in use by another `grpo train` (pid {holder}); "
                "wait for it to finish or pass another --run-dir"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def check_same_run(run_dir: Path, cfg: RunConfig) -> None:
    """A run directory holds one run: only train.steps (see `_check_total_steps`), where
    compilations are cached, whether checkpoints are written in the background or compressed,
    rollout.weights_layout, eval, logging and mesh may change on resume."""
    saved = run_dir / "config.yaml"
    mutable = {"train": {"steps", "compilation_cache_dir"}, "checkpoint": {"asynchronous", "compress"},
               "rollout": {"weights_layout"}, "logging": None, "eval": None, "mesh": None}
    if saved.exists():
        old_cfg = RunConfig.model_validate(read_yaml(saved))
        old, new = old_cfg.model_dump(mode="json"), cfg.model_dump(mode="json")
        for section, fields in mutable.items():
            for tree in (old, new):
                if fields is None:
                    tree.pop(section, None)
                else:
                    for field in fields:
                        tree[section].pop(field, None)
        changed = sorted(k for k in new if new[k] != old.get(k))
        if changed:
            raise UserError(
                f"run directory {run_dir} holds a run with a different config (sections {', '.join(changed)} "
                "differ); resume it with its own config.yaml or pass a new --run-dir"
            )
        _check_total_steps(run_dir, old_cfg, cfg)


def _check_total_steps(run_dir: Path, old: RunConfig, new: RunConfig) -> None:
    """train.steps may grow (or shrink to no fewer than the steps trained) as long as every
    optimizer update already applied keeps its learning rate. A schedule that spans the
    total (warmup_cosine decays over train.steps; warmup_steps null derives the warmup
    from it) would give trained steps other rates than they had, so such a change is
    refused; a constant schedule with an explicit warmup_steps extends exactly. A run with
    rollout.max_staleness > 0 that trained all its steps cannot grow: its next rollout
    would sample with the params before the last update."""
    done = trained_steps(run_dir)
    if new.train.steps < done:
        raise UserError(
            f"run directory {run_dir} has trained {done} steps already, more than train.steps={new.train.steps}; "
            f"pass train.steps={done} or more to resume it, or a new --run-dir"
        )
    if new.train.steps != old.train.steps and not np.array_equal(update_lrs(old.train, done), update_lrs(new.train, done)):
        raise UserError(
            f"train.steps={new.train.steps} would change the learning rate of the {done} steps run directory "
            f"{run_dir} has trained (its {old.train.optimizer.lr_schedule.type} schedule spans "
            f"train.steps={old.train.steps}); keep train.steps={old.train.steps}, or start a new --run-dir "
            "(a constant schedule with an explicit warmup_steps can be extended)"
        )
    if new.rollout.max_staleness and new.train.steps > old.train.steps and done >= old.train.steps:
        raise UserError(
            f"run directory {run_dir} has trained all its train.steps={old.train.steps} with "
            f"rollout.max_staleness={new.rollout.max_staleness}: the next step's rollout needs the params before "
            "the last update, which are gone; start a new --run-dir to train further"
        )


def trained_steps(run_dir: Path) -> int:
    """Steps whose update has run in `run_dir`: past its newest update artifact or checkpoint
    (checkpoint labels count updates), found without opening either."""
    updates = [int(p.parent.name.removeprefix("step-")) + 1 for p in run_dir.glob("steps/step-*/update*.json")]
    checkpoints = [int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(updates + checkpoints, default=0)


def update_lrs(train, steps: int) -> np.ndarray:
    """[steps * ppo_epochs] float32: the learning rate of each optimizer update of the first
    `steps` steps of a run of `train.steps` (step s, epoch e is update s * ppo_epochs + e)."""
    schedule = build_lr_schedule(train.optimizer.lr_schedule, train.steps)
    counts = np.arange(steps * train.ppo_epochs, dtype=np.int32)
    return np.broadcast_to(np.asarray(schedule(counts), np.float32), counts.shape)


def run_id_of(run_dir: Path) -> str:
    """The run's id, part of every phase's cache key: the directory's name when the run
    first used it, kept in run_dir/run_id so that a run moved or copied elsewhere keeps its
    keys (a directory from before the file existed gets its present name written). Every
    process writes its own copy when missing: hosts may each hold a run directory."""
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = run_dir.resolve().name
    atomic_write_bytes(path, run_id.encode())
    return run_id


def check_before_start(cfg: RunConfig, run_dir: Path) -> None:
    """Errors a user can fix, found before Prefect starts: a run directory in use or holding
    another run's config, a model or tokenizer that cannot be found, a data file that is
    missing or malformed. `run_dir` exists already (`grpo_core.errors.writable_dir`)."""
    RunLock(run_dir, jax.process_index()).release()
    check_same_run(run_dir, cfg)
    check_model_source(cfg.model)
    if cfg.data.source not in ("synthetic", "gsm8k"):  # a local file; the hub download waits for the run
        make_prompt_stream(cfg.data)


class RunPlan:
    """What a run is, without its model: config, directory, process layout, batch numbers
    and the prompt stream. Enough to name every phase's cache key (flows/train.py checks a
    finished run with it, before any model load)."""

    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.cfg, self.run_dir, self.run_id = cfg, run_dir, run_id_of(run_dir)
        self.num_processes, self.process_index = jax.process_count(), jax.process_index()
        self.derived = derive_trainer_batch(cfg, self.num_processes, jax.device_count())
        self.stream = make_prompt_stream(cfg.data)
        self._update_lrs = update_lrs(cfg.train, cfg.train.steps)

    def step_lrs(self, step: int) -> list[float]:
        """The learning rates of `step`'s optimizer updates (one per train.ppo_epochs): what
        train.steps changes about the step, so its update's cache key holds them instead."""
        epochs = self.cfg.train.ppo_epochs
        return self._update_lrs[step * epochs : (step + 1) * epochs].tolist()

    @property
    def sampling_rounds(self) -> int:
        """Rounds of prompts each step reserves: rollout.dynamic_sampling.max_rounds when on."""
        ds = self.cfg.rollout.dynamic_sampling
        return ds.max_rounds if ds.enabled else 1

    def data_state(self, step: int) -> dict:
        """Stream position at the start of `step`: a pure function of the step (each step
        reserves `sampling_rounds` batches of prompts, used or not)."""
        seen = step * self.derived.prompts_global_per_step * self.sampling_rounds
        total = len(self.stream.train_items)
        return {"epoch": seen // total, "position": seen % total, "seed": self.cfg.data.seed, "num_train": total}

    def round_items(self, step: int) -> list[list[dict]]:
        """The prompts of each sampling round of `step`, in the same order on every process."""
        self.stream.restore(self.data_state(step))
        return [self.stream.next_batch(self.derived.prompts_global_per_step) for _ in range(self.sampling_rounds)]

    def global_items(self, step: int) -> list[dict]:
        """All prompts of `step`'s first sampling round, in the same order on every process."""
        return self.round_items(step)[0]

    def step_prompt_ids(self, step: int) -> list[int]:
        """The prompt ids a rollout cache key names: this process's prompts, or with dynamic
        sampling every round's global prompts (any of them may end up in the batch)."""
        if self.sampling_rounds > 1:
            return [int(item["prompt_id"]) for items in self.round_items(step) for item in items]
        return [int(item["prompt_id"]) for item in self.items_for_step(step)]

    def items_for_step(self, step: int) -> list[dict]:
        """This process's share of the step's prompts (groups never span processes)."""
        share = self.derived.prompts_per_process
        return self.global_items(step)[self.process_index * share : (self.process_index + 1) * share]

    def rollout_params_version(self, step: int) -> int:
        """The params version (updates applied) `step`'s rollout samples with: the step's own
        with rollout.max_staleness=0; with 1, the one step k-1's update starts from, which
        the flow holds while it samples step k ahead of that update (the first step has no
        earlier params and samples the initial ones)."""
        return max(0, step - self.cfg.rollout.max_staleness)

    def sample_seed(self, step: int, round_: int = 0) -> int:
        """The sampling seed of `step` (and dynamic-sampling round): the same on every process
        (the sampler draws for the whole global batch), so a run's samples do not depend on
        how it is split."""
        return (self.cfg.train.seed * 1_000_003 + step * 7919 + round_ * 15_485_863) % (2**31 - 1)
