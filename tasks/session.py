"""The training session: model state on device for the whole run, never in Prefect results.

`TrainSession.open(cfg, run_dir)` takes the run directory's lock, loads or initialises
the model, builds the optimizer and the train step, and restores the newest checkpoint.
Phase tasks look the session up by run id (`get_session`), so the Prefect tasks only
ever pass small manifests around.
"""
from __future__ import annotations

import contextvars
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from grpo_core import compiles, phases
from grpo_core import lora as lora_lib
from grpo_core.artifacts import atomic_write_bytes
from grpo_core.checkpoint import Checkpoints, SaveTimes
from grpo_core.errors import UserError
from grpo_core.layouts import bytes_per_device, generation_mesh, host_replicas, to_generation_layout
from grpo_core.accelerators import Accelerator, tpu_generation
from grpo_core.models.model import Model
from grpo_core.optim import build_lr_schedule, build_optimizer
from grpo_core.sampling import sampler_prompt_width
from grpo_core.train_step import Trainer
from schemas.loading import config_to_yaml
from schemas.model import base_dtype
from schemas.run import RunConfig
from tasks.device_groups import run_meshes, split_devices
from tasks.dispatch import DispatchOwner, GroupThread
from tasks.faults import maybe_inject_fault
from tasks.host import keep_freed_memory
from tasks.model_source import resolve_model
from tasks.multihost import global_max
from tasks.run_dir import RunLock, RunPlan, check_same_run

_SESSIONS: dict[str, "TrainSession"] = {}


def get_session(run_id: str) -> "TrainSession":
    if run_id not in _SESSIONS:
        raise RuntimeError(f"no open training session for run {run_id}")
    return _SESSIONS[run_id]


class TrainSession(RunPlan):
    def __init__(self, cfg: RunConfig, run_dir: Path):
        super().__init__(cfg, run_dir)
        self.dispatch = DispatchOwner()  # the thread that opens the session dispatches its programs
        sampler_devices, trainer_devices = split_devices(cfg.mesh.sampler_devices)
        self.split = sampler_devices is not trainer_devices  # tasks/device_groups.py
        sampler_local = len(sampler_devices) // self.num_processes
        self.mesh, sampler_mesh = run_meshes(cfg, self.num_processes, sampler_devices, trainer_devices)
        compiles.use_cache_dir(compilation_cache_dir(cfg, run_dir, self.mesh))  # before the first compile
        self.lora = lora_lib.spec_from_config(cfg.model.lora)
        model = resolve_model(lora_model_section(cfg.model, self.mesh), cfg.train.seed, self.mesh,
                              cfg.data.chat_template)
        self.model_cfg, self.tokenizer = model.config, model.tokenizer
        self.schedule_lr = build_lr_schedule(cfg.train.optimizer.lr_schedule, cfg.train.steps)
        self.trainer = make_trainer(cfg, self.model_cfg, self.mesh, self.derived.grad_accum_steps)
        if self.lora is None:
            self.params, self.base_sha256 = model.params, None
            self.ref_params = jax.tree.map(jnp.copy, self.params) if cfg.loss.beta > 0 else None
        else:  # the adapters train; the frozen base is also the reference (grpo_core/lora.py)
            self.params = lora_lib.init_sharded_adapters(self.model_cfg, self.lora, cfg.train.seed, self.mesh)
            self.ref_params = model.params
            self.base_sha256 = base_fingerprint(model.params)
            self._merge = lora_lib.merge_program(self.lora, model.params)
        self.opt_state = self.trainer.init_opt_state(self.params)
        self.checkpoints = Checkpoints(run_dir / "checkpoints", keep=cfg.checkpoint.keep,
                                       asynchronous=cfg.checkpoint.asynchronous, before_commit=_checkpoint_fault,
                                       compress=cfg.checkpoint.compress)
        self.weights_layout = resolve_weights_layout(cfg, self.mesh)
        self.generation_mesh = generation_mesh(sampler_mesh, self.weights_layout, self.model_cfg, sampler_local)
        # With a split: the sampler group's own dispatch thread and its copy of the params.
        self.sampler = GroupThread("grpo-sampler") if self.split else None
        self.sampler_params, self.sampler_params_version = None, None
        self.rollout_ahead = None  # the future of the rollout sampling beside the update
        self.reshard_stats: dict[str, float] = {}
        self.params_version = 0
        # rollout.prompt_width "run_max": the widest prompt width of the steps seen so far, fed
        # by every rollout manifest the step flows return (cache hits too, so a resumed run
        # replays it from its artifacts and samples what an uninterrupted run samples).
        self.prompt_width_floor = 0
        self.timings: dict[int, dict[str, float]] = {}
        self.saves: dict[int, SaveTimes] = {}  # by training step
        self._restore_latest()

    @classmethod
    def open(cls, cfg: RunConfig, run_dir: str | Path) -> "TrainSession":
        keep_freed_memory()  # before the model's buffers exist (tasks/host.py)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir, jax.process_index())
        try:
            check_same_run(run_dir, cfg)
            if jax.process_index() == 0:
                atomic_write_bytes(run_dir / "config.yaml", config_to_yaml(cfg).encode())
            compiles.install()
            compile_mark = compiles.mark()
            with compiles.in_phase("setup"):
                session = cls(cfg, run_dir)
            session.compile_mark = compile_mark
        except BaseException:
            lock.release()
            raise
        session._lock = lock
        _SESSIONS[session.run_id] = session
        return session

    def close(self) -> None:
        _SESSIONS.pop(self.run_id, None)
        if self.sampler is not None:
            self.sampler.close()
        self.checkpoints.close()
        self._lock.release()

    # ---- model state -------------------------------------------------------------------

    def policy_like(self) -> Model:
        """A Model with the policy's shapes, dtypes and shardings, to lower the sampler with:
        with LoRA the base itself (the merge changes values only), so nothing is computed."""
        return Model(self.model_cfg, self.params if self.lora is None else self.ref_params, self.tokenizer)

    def _base_dtype(self) -> str:
        return str(jax.tree.leaves(self.ref_params)[0].dtype)

    def _policy_weights(self) -> dict:
        if self.lora is None:
            return self.params
        return self._merge(self.ref_params, self.params)

    def generation_policy(self) -> Model:
        """The policy on the generation mesh (rollout.weights_layout): the params resharded
        once, here, for a whole rollout; the copy is dropped with the returned Model, so the
        update never holds it. The reshard's seconds and the copy's bytes per device go to
        `reshard_stats` (the rollout's manifest stats)."""
        self.sampler_owner.check("rollout")
        if self.split:  # the copy publish_params keeps on the sampler group
            return Model(self.model_cfg, self.sampler_params, self.tokenizer)
        started = time.perf_counter()
        # With LoRA the merge is the copy (made once per rollout), resharded when the layouts differ.
        weights = self._policy_weights()
        params = jax.block_until_ready(to_generation_layout(weights, self.model_cfg, self.generation_mesh))
        copy = params is not self.params
        self.reshard_stats = {"weights_reshard_seconds": time.perf_counter() - started if copy else 0.0,
                              "generation_weights_gib": bytes_per_device(params) / 2**30 if copy else 0.0}
        return Model(self.model_cfg, params, self.tokenizer)

    # ---- device groups (mesh.sampler_devices) ---------------------------------------------

    @property
    def sampler_owner(self):
        """Who dispatches the sampler's programs: the sampler group's thread, or the session's owner."""
        return self.sampler.owner if self.split else self.dispatch

    @property
    def sampling_version(self) -> int:
        """The params version a rollout or eval started now samples with."""
        return self.sampler_params_version if self.split else self.params_version

    def on_sampler(self, fn, *args):
        """fn(*args) on the thread that dispatches the sampler's programs (this one with no split)."""
        return self.sampler.run(contextvars.copy_context().run, fn, *args) if self.split else fn(*args)

    def submit_on_sampler(self, fn, *args):
        """Like on_sampler, without waiting: a Future, or the result itself with no split."""
        return self.sampler.submit(contextvars.copy_context().run, fn, *args) if self.split else fn(*args)

    def publish_params(self) -> None:
        """With a split: reshard the current params onto the sampler group's generation layout
        (device to device), unless it holds them already. Called by the trainer's owner, which
        waits while the sampler thread runs the transfer (tasks/dispatch.py)."""
        if not self.split or self.sampler_params_version == self.params_version:
            return
        self.dispatch.check("params transfer")
        # With LoRA the merge runs here, on the trainer's devices; only merged weights cross.
        # With several processes each host copies its own replica (grpo_core.layouts.place):
        # params split across hosts are first gathered into one per host, on the trainer group.
        weights = self._policy_weights()
        if self.num_processes > 1:
            weights = host_replicas(weights)
        self.sampler.run(self._receive_params, weights, self.params_version)

    def _receive_params(self, params, version: int) -> None:
        self.sampler_params = None  # the old copy goes before the new one arrives
        started = time.perf_counter()
        self.sampler_params = jax.block_until_ready(to_generation_layout(params, self.model_cfg, self.generation_mesh))
        self.sampler_params_version = version
        self.reshard_stats = {"weights_reshard_seconds": time.perf_counter() - started,
                              "generation_weights_gib": bytes_per_device(self.sampler_params) / 2**30}

    def wait_for_rollout_ahead(self) -> None:
        """Wait for the rollout running beside this update (`rollout_ahead`, set by the flow),
        raising what it raised: a checkpoint after update k must find step k+1's rollout on
        disk, since it sampled with the params the checkpoint no longer holds."""
        ahead, self.rollout_ahead = self.rollout_ahead, None
        if ahead is not None:
            ahead.result()

    def apply_update(self, batch_np: dict, step: int) -> dict[str, float]:
        """One train step on this process's rows; advances params_version. Returns float metrics."""
        if self.params_version != step:
            raise RuntimeError(f"update of step {step} on params of version {self.params_version}")
        self.dispatch.check("update")
        # Every process must run the same number of micro-batches when zero-advantage groups are skipped.
        min_groups = global_max(self.trainer.informative_groups(batch_np)) if self.num_processes > 1 else 0
        batch = self.trainer.shard_batch(batch_np, min_groups)
        params, opt_state, metrics = self.trainer.step(self.params, self.opt_state, batch, self.ref_params)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics["lr"] = float(self.schedule_lr(step * self.cfg.train.ppo_epochs))  # one optimizer update per epoch
        if not np.isfinite(metrics.get("loss", 0.0)):
            raise NonFiniteLoss(step, metrics.get("loss"))
        self.params, self.opt_state, self.params_version = params, opt_state, step + 1
        return metrics

    def should_checkpoint(self, step: int) -> bool:
        done = step + 1
        return done % self.cfg.checkpoint.every_steps == 0 or done == self.cfg.train.steps

    def save_checkpoint(self, step: int) -> None:
        """Checkpoint the state after `step`'s update; the write continues in the background
        (`wait_for_checkpoints`). Records the seconds the save held the step ("checkpoint")."""
        self.dispatch.check("checkpoint")
        meta = {"next_step": self.params_version, "data": self.data_state(self.params_version),
                "seed": self.cfg.train.seed}
        if self.base_sha256 is not None:
            meta.update(base_sha256=self.base_sha256, base_dtype=self._base_dtype())
        saved = self.checkpoints.save(self.params_version, self.params, self.opt_state, meta)
        self.saves[step] = saved
        self.record_timing(step, "checkpoint", saved.blocking_s)

    def wait_for_checkpoints(self) -> None:
        """Block until the last checkpoint save has committed."""
        self.checkpoints.wait()

    def _restore_latest(self) -> None:
        latest = self.checkpoints.latest()
        if latest is None:
            return
        self.params, self.opt_state, meta = self.checkpoints.restore(latest, self.params, self.opt_state)
        check_base(meta, self.base_sha256, self.cfg.model.name_or_path)
        self.stream.restore(meta["data"])
        self.params_version = int(meta["next_step"])

    # ---- phases ----------------------------------------------------------------------

    def sample_step(self, step: int):
        """(Rollout table of this process's rows for `step`, sampling stats).

        Every process passes the step's GLOBAL prompts to the sampler (each device samples
        its batch shard) and keeps the rows of its own prompts, so groups never span processes.
        With dynamic sampling, rounds of fresh prompts follow until batch_size groups have a
        reward spread or max_rounds is reached (phases.select_groups); every process scores
        and selects the same global rows.
        """
        rounds, stats = self.round_items(step), {}
        policy = self.generation_policy()  # resharded once for every round
        floor = self.min_prompt_width()
        if len(rounds) == 1:
            table = self.rollout(step, rounds[0], policy=policy, min_prompt_width=floor)
            tables = [table]
        else:
            tables, totals = [], []
            for round_, items in enumerate(rounds):
                tables.append(self.rollout(step, items, seed=self.sample_seed(step, round_), policy=policy,
                                           min_prompt_width=floor))
                rewards, reward_stats = self.score(tables[-1])
                totals.append(np.asarray(rewards.column("reward_total")))
                if round_ == 0:  # the policy on fresh prompts, before selection biases the batch
                    stats.update({f"first_round_{k}": v for k, v in reward_stats.items()})
                spread = np.ptp(np.concatenate(totals).reshape(-1, self.cfg.rollout.n), axis=1) > 0
                if spread.sum() >= self.derived.prompts_global_per_step:
                    break
            table, selected = phases.select_groups(tables, totals, self.cfg.rollout.n, self.derived.prompts_global_per_step)
            stats.update(selected)
        if self.cfg.rollout.prompt_width == "run_max":
            longest = max(max(t.column("prompt_length").to_pylist()) for t in tables)
            stats.update(prompt_width=float(sampler_prompt_width(longest, floor)), prompt_width_floor=float(floor))
        share = self.derived.prompts_per_process * self.cfg.rollout.n
        return table.slice(self.process_index * share, share), stats

    def min_prompt_width(self) -> int:
        """The width the sampler and the update pad prompts to at least (rollout.prompt_width)."""
        return self.prompt_width_floor if self.cfg.rollout.prompt_width == "run_max" else 0

    def note_rollout(self, stats: dict[str, float]) -> None:
        """A step's rollout manifest stats, in step order: raise the run's prompt width floor."""
        self.prompt_width_floor = max(self.prompt_width_floor, int(stats.get("prompt_width", 0)))

    def score(self, rollout_table):
        """phases.reward_table with the run's rewards and overlong shaping."""
        penalty = self.cfg.overlong_penalty
        overlong = (penalty.cache_tokens, penalty.max_penalty) if penalty else None
        return phases.reward_table(rollout_table, self.cfg.rewards, overlong, self.cfg.rollout.max_new_tokens)

    def rollout(self, step: int, items=None, greedy: bool = False, seed: int | None = None, policy=None,
                min_prompt_width: int = 0):
        """Rollout table of this process's rows for `step` (see sample_step), or of all of
        `items`, with the current params (`policy`: their generation-layout copy, when the
        caller already made it)."""
        if items is None:
            return self.sample_step(step)[0]
        r, d = self.cfg.rollout, self.cfg.data
        return phases.rollout_table(
            self.generation_policy() if policy is None else policy, items, step=step,
            n=1 if greedy else r.n, max_new_tokens=(self.cfg.eval.max_new_tokens or r.max_new_tokens) if greedy
            else r.max_new_tokens, temperature=0.0 if greedy else r.temperature, top_p=r.top_p, top_k=r.top_k,
            seed=self.sample_seed(step) if seed is None else seed, system_prompt=d.system_prompt,
            chat_template=d.chat_template, max_prompt_tokens=r.max_prompt_tokens, mesh=self.generation_mesh,
            min_prompt_width=min_prompt_width,
        )

    def update(self, step: int, rollout_table, advantage_table, min_prompt_width: int = 0) -> dict[str, float]:
        """One update on the step's artifacts; `min_prompt_width`: the floor its rollout sampled with."""
        width = max(min_prompt_width, global_max(max(len(p) for p in rollout_table.column("prompt_ids").to_pylist())))
        batch = phases.update_batch(rollout_table, advantage_table, self.cfg.rollout.max_new_tokens,
                                    self.model_cfg.pad_token_id or 0, prompt_width=width,
                                    mask_truncated=self.cfg.loss.mask_truncated,
                                    sampler_logps=self.cfg.loss.tis_cap is not None)
        started = time.perf_counter()
        metrics = self.apply_update(batch, step)
        tokens = float(batch["attn_mask_bt"].sum()) * self.cfg.train.ppo_epochs * self.num_processes
        metrics["update_tokens_per_s"] = tokens / max(time.perf_counter() - started, 1e-9)
        return {**metrics, **phases.padding_stats(batch, self.cfg.rollout.max_new_tokens)}

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy (gsm8k_correct) on the first eval.num_prompts held-out prompts."""
        items = self.stream.eval_items[: self.cfg.eval.num_prompts]
        table = self.rollout(self.params_version, items=items, greedy=True)
        rewards, _ = phases.reward_table(table, [("gsm8k_correct", 1.0)])
        return {"eval_accuracy": float(np.mean(rewards.column("reward_gsm8k_correct"))),
                "eval_completion_length_mean": float(np.mean(table.column("completion_length"))),
                "eval_prompts": float(len(items))}

    def record_timing(self, step: int, phase: str, seconds: float) -> None:
        """Compute seconds of phases that actually ran (cache hits record nothing)."""
        self.timings.setdefault(step, {})[phase] = seconds


def compilation_cache_dir(cfg: RunConfig, run_dir: Path, mesh) -> str | None:
    """train.compilation_cache_dir, or the run directory's own xla-cache folder; None (no
    persistent cache) where programs for `mesh` must not be loaded from one
    (`compiles.persistent_cache_safe`)."""
    if not compiles.persistent_cache_safe(mesh):
        return None
    return cfg.train.compilation_cache_dir or str(run_dir.absolute() / "xla-cache")


def lora_model_section(section, mesh):
    """The `model:` section to load the weights with: with LoRA the base's dtype is
    model.lora.base_dtype, where auto is bfloat16 on TPU/GPU meshes and model.dtype on CPU."""
    return section.model_copy(update={"dtype": base_dtype(section, mesh.devices.flat[0].platform)})


def base_fingerprint(base: dict) -> str:
    """sha256 of the frozen base weights, recorded in every LoRA checkpoint. Taken over the
    weights rounded to bfloat16, so a run that moves between a float32 base (CPU) and a
    bfloat16 one (accelerators, model.lora.base_dtype auto) still recognises its base."""
    from flows.observe import params_sha256

    return params_sha256(jax.tree.map(lambda x: x.astype(jnp.bfloat16), base))


def check_base(meta: dict, base_sha256: str | None, name: str) -> None:
    """Refuse to resume adapters on other base weights (or a LoRA checkpoint as a full one)."""
    saved = meta.get("base_sha256")
    if saved == base_sha256:
        return
    if base_sha256 is None:
        raise UserError("the run directory's checkpoints hold LoRA adapters but model.lora is off; "
                        "resume with the run's own model.lora or use a new --run-dir")
    raise UserError(f"the run directory's checkpoints were trained on other base weights than model.name_or_path="
                    f"{name!r} (base sha256 {str(saved)[:12]}, now {base_sha256[:12]}); point model.name_or_path at "
                    "the base the run trained on (or, to train anew, use a new --run-dir)")


def _checkpoint_fault(label: int) -> None:
    """Fault point "checkpoint:<step>": a save's files are written, its commit is not."""
    maybe_inject_fault("checkpoint", label - 1)


def make_trainer(cfg: RunConfig, model_cfg, mesh, grad_accum_steps: int) -> Trainer:
    """The run's train step (also what `grpo preflight --compile` compiles for a TPU slice)."""
    loss_cfg = cfg.loss.model_copy(update={"max_completion_length": cfg.loss.max_completion_length or cfg.rollout.max_new_tokens})
    return Trainer(
        model_cfg, build_optimizer(cfg.train.optimizer, cfg.train.steps), loss_cfg, mesh=mesh,
        micro_batches=grad_accum_steps, ppo_epochs=cfg.train.ppo_epochs, temperature=cfg.rollout.temperature,
        remat=cfg.model.remat,
        score_last=cfg.rollout.max_new_tokens,  # phases.update_batch puts completions in the last columns
        group_size=cfg.rollout.n,  # rollout rows are group-contiguous: prompts run once per group
        lora=lora_lib.spec_from_config(cfg.model.lora), dropout_seed=cfg.train.seed,
    )


def resolve_weights_layout(cfg: RunConfig, mesh) -> str:
    """rollout.weights_layout for this machine: "auto" is the memory estimate's choice for
    these devices' memory limit (the training layout where devices report none, e.g. CPU).
    Every process sees the same limit, so all of them choose the same layout."""
    device = jax.local_devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit")
    if cfg.rollout.weights_layout != "auto" or limit is None:
        return "fsdp" if cfg.rollout.weights_layout == "auto" else cfg.rollout.weights_layout
    from flows.preflight import build_workload  # RunConfig -> the estimate's Workload, as `grpo preflight` builds it

    tpu = device.platform == "tpu"
    here = Accelerator("this machine", "tpu" if tpu else "gpu", mesh.size, jax.process_count(), limit / 2**30,
                       topology=f"{tpu_generation(device.device_kind)}:" if tpu else "")
    return build_workload(cfg, here)[0].weights_layout


class NonFiniteLoss(UserError):
    exit_code = 1

    def __init__(self, step: int, loss):
        super().__init__(
            f"step {step}: the loss is {loss} (not finite); the run stopped and kept the last good checkpoint. "
            "Lower train.optimizer.lr_schedule.peak_value or check the rewards"
        )

