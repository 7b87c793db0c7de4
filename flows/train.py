"""The `train` flow: one `step-<k>` flow run per training step, four cached phase tasks each.

    rollout --> reward --> advantage --> update (+ checkpoint)     [+ eval every N steps]

With rollout.max_staleness=1 the flow of step k also samples step k+1's rollout before
step k's update, with the params that update starts from (version k), so the rollout of
step k+1 is one step off-policy and step k+1's flow finds it cached:

    rollout k --> reward k --> advantage k --> rollout k+1 --> update k

With mesh.sampler_devices the rollout of step k+1 is submitted (it runs in a Prefect
worker thread, on the sampler's devices) and the update runs beside it; the flow waits
for the rollout before eval and before the next step's params transfer; the update's
checkpoint waits for it too.

A checkpoint saved after update k therefore always has step k+1's rollout on disk, which
is all a resume needs: nothing ever samples with params older than the session holds.

Model state lives in the process-level `TrainSession`; Prefect only sees manifests. On a
restart the session restores the newest checkpoint; steps before it replay as cache
hits, and steps after it reuse their cached rollout/reward/advantage artifacts and
re-run `update` on them, so nothing is sampled twice. A run whose every phase is already
cached (a finished run, run again) is recognised before the model is loaded: nothing is
loaded, restored or run, and the saved summary is returned. A step's update key holds the
learning rates of its optimizer updates rather than train.steps, so a run given a larger
train.steps continues with its finished steps cached (a new total that would change a
trained step's rate is refused first: tasks/session.py `_check_total_steps`).

Both flows are async: Prefect's sync engine joins its heartbeat thread for up to a second
at the end of every flow run, which would be ~5% of a quickstart step.
"""
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import jax
from prefect import flow
from prefect.futures import PrefectFuture
from prefect.context import SyncClientContext

from flows.console import run_logs_to_prefect
from flows.observe import RunObserver
from schemas.run import RunConfig
from tasks import phases, warm_start, watchdog
from tasks.cache import PhaseInput, cache_options, cached_manifest, config_digest, drop_if_broken, dump_without
from tasks.multihost import all_processes
from tasks.session import TrainSession, get_session
from tasks.run_dir import RunLock, RunPlan

logger = logging.getLogger("grpo_flows.train")


def _phase_inputs(session) -> dict:
    """The config each phase reads, hashed into its cache key."""
    cfg = session.cfg
    # Options that are off add nothing, so older runs keep their keys.
    overlong = [cfg.overlong_penalty, cfg.rollout.max_new_tokens] if cfg.overlong_penalty else []
    selection = [cfg.rewards, *overlong] if cfg.rollout.dynamic_sampling.enabled else []  # DS picks groups by reward
    return {
        # The weights layout changes where the sampler runs, not what it samples.
        "rollout": config_digest(cfg.model, dump_without(cfg.rollout, "weights_layout"), cfg.data, cfg.train.seed,
                                 *selection),
        "reward": config_digest(cfg.rewards, *overlong),
        "advantage": config_digest(cfg.advantage, cfg.rollout.n),
        # Where compiled programs are cached changes no result (and may change on resume);
        # train.steps changes a step's update only through its learning rates (`_input`).
        "update": config_digest(cfg.loss, dump_without(cfg.train, "compilation_cache_dir", "steps"), cfg.model.remat,
                                *([cfg.model.lora] if cfg.model.lora else [])),
        "eval": config_digest(cfg.model, cfg.eval, cfg.data, cfg.rollout.max_new_tokens),
    }


def _input(session, step: int, phase: str, digests: dict, **extra) -> PhaseInput:
    digest = config_digest(digests[phase], session.step_lrs(step)) if phase == "update" else digests[phase]
    return PhaseInput(run_id=session.run_id, run_dir=str(session.run_dir), step=step, phase=phase,
                      process_index=session.process_index, config_digest=digest, **extra)


def _refresh(phase_input: PhaseInput) -> bool:
    """Recompute a collective phase unless EVERY process has it cached (see tasks/multihost.py)."""
    if get_session(phase_input.run_id).num_processes == 1:
        return False
    return not all_processes(drop_if_broken(phase_input.cache_key(), phase_input.run_dir))


@flow(name="train-step", flow_run_name="step-{step}", persist_result=False)
async def step_flow(run_id: str, step: int) -> dict:
    """One training step: the four phases (each a cached task) and, when due, eval."""
    session = get_session(run_id)
    opts, digests = cache_options(session.run_dir), _phase_inputs(session)
    rolled = _rollout(session, step, digests, opts)
    session.note_rollout(rolled.stats)  # cached or not: the prompt width floor (rollout.prompt_width)
    rewarded = phases.reward.with_options(**opts)(_input(session, step, "reward", digests, upstream=rolled))
    advantaged = phases.advantage.with_options(**opts)(_input(session, step, "advantage", digests, upstream=rewarded))
    update_input = _input(session, step, "update", digests, upstream=advantaged)
    # On the params this update starts from; with a device split, on the sampler group
    # while the update runs on the trainer group.
    ahead = _rollout(session, step + 1, digests, opts, overlap=True) if _samples_ahead(session, step) else None
    session.rollout_ahead = ahead if isinstance(ahead, PrefectFuture) else None  # its checkpoint waits for it
    # The params still need this update: run it even if cached. The same on every process,
    # since all restore the same checkpoint.
    replay = session.params_version <= step
    updated = phases.update.with_options(**opts, refresh_cache=replay)(update_input, rolled)
    manifests = {"rollout": rolled, "reward": rewarded, "advantage": advantaged, "update": updated}
    if isinstance(ahead, PrefectFuture):
        ahead.result()  # the sampler group is idle again before the next params transfer
    if _eval_due(session.cfg, step):
        session.publish_params()
        eval_input = _input(session, step, "eval", digests, params_version=step + 1)
        manifests["eval"] = phases.evaluate.with_options(**opts, refresh_cache=_refresh(eval_input))(eval_input)
    return manifests


def _rollout(session, step: int, digests: dict, opts: dict, overlap: bool = False):
    """The rollout task of `step` on the params version its key names (cached when done).
    With a device split the params go to the sampler group first when they are that
    version; `overlap`: submitted to run beside what the flow does next (a future)."""
    version = session.rollout_params_version(step)
    if session.params_version == version:
        session.publish_params()
    rollout_input = _input(session, step, "rollout", digests, params_version=version,
                           prompt_ids=_prompt_ids(session, step))
    task = phases.rollout.with_options(**opts, refresh_cache=_refresh(rollout_input))
    return task.submit(rollout_input) if overlap and session.split else task(rollout_input)


def _samples_ahead(plan: RunPlan, step: int) -> bool:
    """Whether `step`'s flow samples the next step's rollout (rollout.max_staleness > 0)."""
    return plan.cfg.rollout.max_staleness > 0 and step + 1 < plan.cfg.train.steps


def _eval_due(cfg: RunConfig, step: int) -> bool:
    return bool(cfg.eval.every_steps) and (step + 1) % cfg.eval.every_steps == 0


def _prompt_ids(plan: RunPlan, step: int) -> list[int]:
    return plan.step_prompt_ids(step)


def _step_is_cached(plan: RunPlan, step: int, digests: dict) -> bool:
    """Whether every phase of `step` would be a cache hit (each artifact intact), found
    by reading the cache records the step flow's tasks would read, without running any."""
    def cached(phase: str, **extra):
        return cached_manifest(_input(plan, step, phase, digests, **extra).cache_key(), plan.run_dir)

    manifest = cached("rollout", params_version=plan.rollout_params_version(step), prompt_ids=_prompt_ids(plan, step))
    for phase in ("reward", "advantage", "update"):
        manifest = manifest and cached(phase, upstream=manifest)
    if manifest and _eval_due(plan.cfg, step):
        manifest = cached("eval", params_version=step + 1)
    return manifest is not None


def claimed_summary(config: RunConfig, run_dir: Path) -> dict | None:
    """The run's summary.json if it claims all `config.train.steps` steps (no artifact checked)."""
    summary_path = Path(run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return summary if summary is not None and summary.get("steps") == config.train.steps else None


def finished_summary(config: RunConfig, run_dir: Path) -> dict | None:
    """The saved summary of a run that has nothing left to compute, else None.

    Every process checks its own shards; the run counts as finished only when all agree.
    """
    summary = claimed_summary(config, run_dir)
    finished = summary is not None
    if finished:
        plan = RunPlan(config, run_dir)
        digests = _phase_inputs(plan)
        finished = all(_step_is_cached(plan, step, digests) for step in range(config.train.steps))
    return summary if all_processes(finished) else None


@contextmanager
def shared_client():
    """One Prefect API client for every task run and progress update of a training run.

    Prefect's task engine makes a new sync client per task run unless one is in context,
    and each new client builds a TLS context from the CA bundle (tens of milliseconds) even
    for a plain-HTTP local server: 5 clients per step (4 tasks, 1 progress artifact).
    """
    with SyncClientContext.get_or_create() as ctx:
        yield ctx


@flow(name="train", log_prints=True, persist_result=False)
async def train_flow(config: RunConfig, run_dir: str = "runs/default") -> dict:
    """Train for `config.train.steps` steps in `run_dir`, resuming whatever is already there."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with run_logs_to_prefect():
        # A session opened ahead (tasks/warm_start.py) was opened for a run with steps left
        # (and holds the run's lock).
        if not warm_start.pending(run_dir):
            lock = RunLock(Path(run_dir), jax.process_index())
            try:
                summary = finished_summary(config, Path(run_dir))
            finally:
                lock.release()
            if summary is not None:
                logger.info("nothing to do: %d steps already trained", summary["steps"])
                return summary
        return await _train(config, Path(run_dir))


async def _train(config: RunConfig, run_dir: Path) -> dict:
    opened = time.perf_counter()
    taken = warm_start.take(run_dir)  # (session, when it began opening) if opened ahead
    session, opened = taken if taken is not None else (TrainSession.open(config, run_dir), opened)
    observer = RunObserver(session, opened)
    try:
        with shared_client(), watchdog.watching(config.logging.phase_timeout_s, run_dir, session.process_index):
            for step in range(config.train.steps):
                started = time.perf_counter()
                manifests = await step_flow.with_options(flow_run_name=f"step-{step}")(session.run_id, step)
                observer.step_done(step, manifests, time.perf_counter() - started)
            with watchdog.phase(config.train.steps - 1, "checkpoint"):
                session.wait_for_checkpoints()  # the run is done when its last checkpoint is committed
            return observer.finish()
    finally:
        observer.close()
        session.close()  # waits for a save still in flight (an error or a cancel above)
