"""The four phase tasks of a training step (+ eval): a few lines around one grpo_core call.

Each task takes a `PhaseInput` (its cache key material), finds the run's session, runs
the phase, writes the artifact atomically under the run directory and returns a small
`PhaseManifest`. Prefect caches the manifest (see tasks/cache.py), never the model.
Each phase that runs (a cache hit runs nothing) is watched by the run's phase watchdog
(tasks/watchdog.py), and so is the blocking part of the update's checkpoint save.
"""
import json
import time

from prefect import task

from grpo_core.artifacts import SCHEMA_VERSION, atomic_write_bytes, read_table, sha256_file, write_table
from grpo_core import compiles, phases
from grpo_core.errors import UserError
from schemas.manifests import PhaseManifest
from tasks.cache import PhaseInput
from tasks.faults import maybe_inject_fault
from tasks.session import get_session
from tasks.watchdog import phase as watched_phase, watched


def artifact_path(session, step: int, phase: str, suffix: str) -> str:
    """Path relative to the run dir; one shard per process when there are several."""
    name = phase if session.num_processes == 1 else f"{phase}.p{session.process_index}of{session.num_processes}"
    return f"steps/step-{step:06d}/{name}.{suffix}"


def _finish(phase_input: PhaseInput, session, table, stats: dict, started: float) -> PhaseManifest:
    maybe_inject_fault(phase_input.phase, phase_input.step)
    rel = artifact_path(session, phase_input.step, phase_input.phase, "parquet")
    digest = write_table(table, session.run_dir / rel)
    seconds = time.perf_counter() - started
    session.record_timing(phase_input.step, phase_input.phase, seconds)
    return PhaseManifest(run_id=phase_input.run_id, step=phase_input.step, phase=phase_input.phase, path=rel,
                         rows=table.num_rows, sha256=digest, schema_version=SCHEMA_VERSION, stats=stats,
                         seconds=seconds)


def _busy(group: str, fn, *args):
    """(fn(*args), when the device group running it began and ended, as unix seconds): run
    in that group's dispatch thread, so a split run shows when each group was busy."""
    began = time.time()
    out = fn(*args)
    return out, {f"{group}_busy_from_unix": began, f"{group}_busy_until_unix": time.time()}


def _upstream_table(session, phase_input: PhaseInput, manifest: PhaseManifest | None = None):
    manifest = manifest or phase_input.upstream
    return read_table(session.run_dir / manifest.path)


def _require_params(session, phase_input: PhaseInput) -> None:
    """Rollout/eval can only be computed on the params version their key names."""
    if session.sampling_version != phase_input.params_version:
        raise UserError(
            f"step {phase_input.step}'s {phase_input.phase} artifact is missing but the params it needs "
            f"(version {phase_input.params_version}) are gone (the session is at "
            f"version {session.sampling_version}); restore the run directory's steps/ folder or start a new --run-dir"
        )


@task(name="rollout", task_run_name="rollout-{phase_input.step}")
@watched
def rollout(phase_input: PhaseInput) -> PhaseManifest:
    started, session = time.perf_counter(), get_session(phase_input.run_id)
    _require_params(session, phase_input)
    with compiles.in_phase("rollout"):
        (table, sampling), busy = session.on_sampler(_busy, "sampler", session.sample_step, phase_input.step)
    version = {"rollout_params_version": float(phase_input.params_version)}  # rollout.max_staleness
    sampling |= busy if session.split else {}
    return _finish(phase_input, session, table,
                   phases.rollout_stats(table) | sampling | session.reshard_stats | version, started)


@task(name="reward", task_run_name="reward-{phase_input.step}")
@watched
def reward(phase_input: PhaseInput) -> PhaseManifest:
    started, session = time.perf_counter(), get_session(phase_input.run_id)
    table, stats = session.score(_upstream_table(session, phase_input))
    return _finish(phase_input, session, table, stats, started)


@task(name="advantage", task_run_name="advantage-{phase_input.step}")
@watched
def advantage(phase_input: PhaseInput) -> PhaseManifest:
    started, session = time.perf_counter(), get_session(phase_input.run_id)
    adv = session.cfg.advantage
    table, stats = phases.advantage_table(_upstream_table(session, phase_input), session.cfg.rollout.n,
                                          adv.estimator, adv.eps, adv.std_ddof, adv.clip)
    return _finish(phase_input, session, table, stats, started)


@task(name="update", task_run_name="update-{phase_input.step}")
@watched
def update(phase_input: PhaseInput, rollout_manifest: PhaseManifest) -> PhaseManifest:
    started, session = time.perf_counter(), get_session(phase_input.run_id)
    if session.params_version > phase_input.step:
        return _applied_update(phase_input, session)
    with compiles.in_phase("update"):
        metrics, busy = _busy("trainer", session.update, phase_input.step,
                              _upstream_table(session, phase_input, rollout_manifest),
                              _upstream_table(session, phase_input),
                              int(rollout_manifest.stats.get("prompt_width_floor", 0)))
    metrics |= busy if session.split else {}
    return _write_json(phase_input, session, metrics, started)


def _applied_update(phase_input: PhaseInput, session) -> PhaseManifest:
    """The manifest of an update the restored params already include, from its artifact: its
    cache record is gone or was made under another key (one from an older version of the
    key), and the update cannot run again on params past it."""
    rel = artifact_path(session, phase_input.step, "update", "json")
    path = session.run_dir / rel
    if not path.is_file():
        raise UserError(
            f"step {phase_input.step}'s update artifact is missing but the params are past it (version "
            f"{session.params_version}); restore the run directory's steps/ folder or start a new --run-dir"
        )
    return _json_manifest(phase_input, session, rel, json.loads(path.read_text()))


@task(name="eval", task_run_name="eval-{phase_input.step}")
@watched
def evaluate(phase_input: PhaseInput) -> PhaseManifest:
    started, session = time.perf_counter(), get_session(phase_input.run_id)
    _require_params(session, phase_input)
    with compiles.in_phase("eval"):
        stats = session.on_sampler(session.evaluate)
    return _write_json(phase_input, session, stats, started)


def _write_json(phase_input: PhaseInput, session, stats: dict, started: float) -> PhaseManifest:
    maybe_inject_fault(phase_input.phase, phase_input.step)
    rel = artifact_path(session, phase_input.step, phase_input.phase, "json")
    atomic_write_bytes(session.run_dir / rel, json.dumps(stats, indent=1, sort_keys=True).encode())
    seconds = time.perf_counter() - started
    session.record_timing(phase_input.step, phase_input.phase, seconds)
    if phase_input.phase == "update" and session.should_checkpoint(phase_input.step):
        session.wait_for_rollout_ahead()
        with compiles.in_phase("checkpoint"), watched_phase(phase_input.step, "checkpoint"):
            session.save_checkpoint(phase_input.step)  # its own timing; the write goes on in the background
    return _json_manifest(phase_input, session, rel, stats, seconds)


def _json_manifest(phase_input: PhaseInput, session, rel: str, stats: dict, seconds: float = 0.0) -> PhaseManifest:
    """The manifest of a phase whose artifact is the JSON file `rel` (update, eval)."""
    return PhaseManifest(run_id=phase_input.run_id, step=phase_input.step, phase=phase_input.phase, path=rel,
                         rows=1, sha256=sha256_file(session.run_dir / rel), schema_version=SCHEMA_VERSION,
                         stats=stats, seconds=seconds)
