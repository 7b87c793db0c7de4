"""The warm start of `grpo train` (tasks/warm_start.py): the session opened while the
embedded server starts, and the first step's programs compiled ahead, are what the flow's
first rollout and update use."""
import jax
import pytest

from grpo_core import compiles, phases
from tasks import warm_start
from train_helpers import tiny_config

PROGRAMS = {"jit(_generate_impl)", "jit(train_step)"}


@pytest.fixture
def persist_every_compile():
    """Tiny programs compile in under jax's 1 s persistence threshold; persist them all."""
    old = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old)


def _first_step(session) -> None:
    """Step 0's rollout and update as the flow's phases run them (labelled by phase)."""
    with compiles.in_phase("rollout"):
        table, _ = session.sample_step(0)
    rewards, _ = session.score(table)
    adv = session.cfg.advantage
    advantages, _ = phases.advantage_table(rewards, session.cfg.rollout.n, adv.estimator, adv.eps, adv.std_ddof,
                                           adv.clip)
    with compiles.in_phase("update"):
        session.update(0, table, advantages)


def test_the_first_step_compiles_nothing_the_warm_start_compiled(tmp_path, persist_every_compile):
    # A sampler length and micro-batching no other test uses: programs no earlier test compiled.
    cfg = tiny_config("rollout.max_new_tokens=11", "train.micro_batch_size=2")
    warm = warm_start.start(cfg, tmp_path)
    assert warm_start.pending(tmp_path)
    session, started = warm_start.take(tmp_path)
    assert not warm_start.pending(tmp_path) and started == warm.started
    try:
        assert warm.compiled == ["rollout", "update"]
        ahead = [c for c in compiles.since(session.compile_mark) if c.phase == "setup" and c.program in PROGRAMS]
        assert {c.program for c in ahead} == PROGRAMS and not any(c.from_cache for c in ahead)
        mark = compiles.mark()
        _first_step(session)
        fresh = [c for c in compiles.since(mark) if c.program in PROGRAMS and not c.from_cache]
        assert fresh == [], fresh
        assert session.params_version == 1
    finally:
        session.close()


def test_a_warm_start_no_flow_took_releases_the_run_directory(tmp_path):
    from tasks.run_dir import RunLock

    warm_start.start(tiny_config(), tmp_path)
    warm_start.discard(tmp_path)
    assert not warm_start.pending(tmp_path)
    RunLock(tmp_path).release()  # free again: the session's lock went with it


def test_an_error_opening_the_session_is_raised_by_take(tmp_path):
    from grpo_core.errors import UserError
    from schemas.loading import config_to_yaml

    other = config_to_yaml(tiny_config("train.seed=99"))  # another run's directory
    (tmp_path / "config.yaml").write_text(other)
    warm_start.start(tiny_config(), tmp_path)
    with pytest.raises(UserError, match="different config"):
        warm_start.take(tmp_path)
    assert not warm_start.pending(tmp_path)
    assert (tmp_path / "config.yaml").read_text() == other
