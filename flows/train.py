"""The `train` flow: one `step-<k>` flow run per training step, four cached phase tasks each.

    rollout --> reward --> advantage --> update (+ checkpoint)     [+ eval every N steps]

Model state lives in the process-level `TrainSession`; Prefect only sees manifests. On a
restart the session restores the newest checkpoint; steps before it replay as cache
hits, and steps after it reuse their cached rollout/reward/advantage artifacts and
re-run `update` on them, so nothing is sampled twice.

Both flows are async: Prefect's sync engine joins its heartbeat thread for up to a second
at the end of every flow run, which would be ~5% of a quickstart step.
"""
import time
from contextlib import contextmanager
from pathlib import Path

from prefect import flow
from prefect.context import SyncClientContext

from flows.observe import RunObserver
from schemas.run import RunConfig
from tasks import phases
from tasks.cache import PhaseInput, cache_options, config_digest, drop_if_broken
from tasks.multihost import all_processes
from tasks.session import TrainSession, get_session


def _phase_inputs(session, step: int) -> dict:
    """The config each phase reads, hashed into its cache key."""
    cfg = session.cfg
    return {
        "rollout": config_digest(cfg.model, cfg.rollout, cfg.data, cfg.train.seed),
        "reward": config_digest(cfg.rewards),
        "advantage": config_digest(cfg.advantage, cfg.rollout.n),
        "update": config_digest(cfg.loss, cfg.train, cfg.model.remat),
        "eval": config_digest(cfg.model, cfg.eval, cfg.data, cfg.rollout.max_new_tokens),
    }


def _input(session, step: int, phase: str, digests: dict, **extra) -> PhaseInput:
    return PhaseInput(run_id=session.run_id, run_dir=str(session.run_dir), step=step, phase=phase,
                      process_index=session.process_index, config_digest=digests[phase], **extra)


def _refresh(phase_input: PhaseInput) -> bool:
    """Recompute a collective phase unless EVERY process has it cached (see tasks/multihost.py)."""
    if get_session(phase_input.run_id).num_processes == 1:
        return False
    return not all_processes(drop_if_broken(phase_input.cache_key(), phase_input.run_dir))


@flow(name="train-step", flow_run_name="step-{step}", persist_result=False)
async def step_flow(run_id: str, step: int) -> dict:
    """One training step: the four phases (each a cached task) and, when due, eval."""
    session = get_session(run_id)
    opts, digests = cache_options(session.run_dir), _phase_inputs(session, step)
    prompt_ids = [int(it["prompt_id"]) for it in session.items_for_step(step)]
    rollout_input = _input(session, step, "rollout", digests, params_version=step, prompt_ids=prompt_ids)
    rolled = phases.rollout.with_options(**opts, refresh_cache=_refresh(rollout_input))(rollout_input)
    rewarded = phases.reward.with_options(**opts)(_input(session, step, "reward", digests, upstream=rolled))
    advantaged = phases.advantage.with_options(**opts)(_input(session, step, "advantage", digests, upstream=rewarded))
    update_input = _input(session, step, "update", digests, upstream=advantaged)
    # The params still need this update: run it even if cached. The same on every process,
    # since all restore the same checkpoint.
    replay = session.params_version <= step
    updated = phases.update.with_options(**opts, refresh_cache=replay)(update_input, rolled)
    manifests = {"rollout": rolled, "reward": rewarded, "advantage": advantaged, "update": updated}
    if session.cfg.eval.every_steps and (step + 1) % session.cfg.eval.every_steps == 0:
        eval_input = _input(session, step, "eval", digests, params_version=step + 1)
        manifests["eval"] = phases.evaluate.with_options(**opts, refresh_cache=_refresh(eval_input))(eval_input)
    return manifests


@contextmanager
def shared_client():
    """One Prefect API client for every task run and progress update of a training run.

    Prefect's task engine makes a new sync client per task run unless one is in context,
    and each new client builds a TLS context from the CA bundle (~25 ms here) even for a
    plain-HTTP local server: 5 clients per step (4 tasks, 1 progress artifact).
    """
    with SyncClientContext.get_or_create() as ctx:
        yield ctx


@flow(name="train", log_prints=True, persist_result=False)
async def train_flow(config: RunConfig, run_dir: str = "runs/default") -> dict:
    """Train for `config.train.steps` steps in `run_dir`, resuming whatever is already there."""
    session = TrainSession.open(config, Path(run_dir))
    observer = RunObserver(session)
    try:
        with shared_client():
            for step in range(config.train.steps):
                started = time.perf_counter()
                manifests = await step_flow.with_options(flow_run_name=f"step-{step}")(session.run_id, step)
                observer.step_done(step, manifests, time.perf_counter() - started)
            return observer.finish()
    finally:
        observer.close()
        session.close()
