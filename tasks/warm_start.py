"""What a single-process `grpo train` does while its embedded Prefect server starts.

Starting the server takes seconds on a small host, with the server's own process busy
and this one waiting for its health check. `start` uses that time in a background
thread: the run's session opens (model loaded, optimizer state built, newest checkpoint
restored) and the sampler and update programs of the step the run starts with compile.
JAX keeps a jitted function's compiled programs in memory for ahead-of-time and traced
calls alike, so that step's rollout and update find them compiled instead of compiling
them (many seconds even for the CPU quickstart); they also go to the run's persistent
compilation cache where one is used (`grpo_core.compiles.persistent_cache_safe`). The
flow then `take`s the open session. The programs compiled are the calls the step makes,
lowered from the session's own objects (`lower_generate_call`, `Trainer.lower`); a
program that differs would only be compiled again by the phase, never a different result.

Multi-process runs open their session inside the flow as before: opening it runs
collectives, which every process must enter in the same order.

The helper thread obeys the run's dispatch rule (tasks/dispatch.py): it owns the session
while it opens it, waits until every array it made is computed, and only compiles after
that (a compile dispatches nothing); `take` joins it and hands the session to the flow's
thread, which dispatches every program from then on.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import jax

from grpo_core import aot, compiles, phases
from grpo_core.sampling import lower_generate_call, sampler_prompt_width
from tasks.session import TrainSession

logger = logging.getLogger("grpo_flows.train")

_PENDING: dict[Path, "WarmStart"] = {}


def _key(run_dir) -> Path:
    return Path(run_dir).resolve()


class WarmStart:
    """A session opening (and its first programs compiling) in a background thread."""

    def __init__(self, cfg, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.started = time.perf_counter()
        self.session: TrainSession | None = None
        self.error: BaseException | None = None
        self.compiled: list[str] = []
        self._cancel = threading.Event()  # `close`: no more compiles (a Ctrl-C should not wait for them)
        self._thread = threading.Thread(target=self._open, name="grpo-warm-start", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        try:
            self.session = TrainSession.open(self.cfg, self.run_dir)
            jax.block_until_ready(_device_state(self.session))  # no device work left in flight at hand-over
        except BaseException as err:  # raised in the flow by `take`
            self.error = err
            return
        try:
            with compiles.in_phase("setup"):
                self.compiled = precompile_step(self.session, self.session.params_version, self._cancel.is_set)
        except Exception as err:  # the phases compile for themselves
            logger.debug("warm start: step programs not compiled ahead (%s)", err)

    def take(self) -> tuple[TrainSession, float]:
        """(The open session, when its opening started); raises what opening it raised."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        session, self.session = self.session, None
        session.dispatch.hand_over(_device_state(session))
        return session, self.started

    def close(self) -> None:
        """Close a session the flow never took (after the compile in progress, if any)."""
        self._cancel.set()
        self._thread.join()
        if self.session is not None:
            self.session.close()
            self.session = None


def _device_state(session: TrainSession) -> tuple:
    return session.params, session.opt_state, session.ref_params


def precompile_step(session: TrainSession, step: int, stop=lambda: False) -> list[str]:
    """Compile `step`'s sampler and update programs (into the persistent compilation cache
    when the run has one); returns the phases compiled. Steps past the last, dynamic
    sampling's update (its width depends on which groups are kept) and a generation layout
    other than the training one (its params are a copy made per rollout) are left to the
    phases. `stop()` true: compile nothing more."""
    cfg, r = session.cfg, session.cfg.rollout
    if step >= cfg.train.steps or stop():
        return []
    items = session.global_items(step)
    prompts = phases.prompt_token_ids(session.tokenizer, items, cfg.data.system_prompt, cfg.data.chat_template,
                                      r.max_prompt_tokens)
    done, floor = [], session.min_prompt_width()
    if session.generation_mesh is session.mesh:
        lower_generate_call(session.policy_like(), prompts, r.max_new_tokens, r.temperature, r.top_p, r.top_k, r.n,
                            session.generation_mesh, floor).compile()
        done.append("rollout")
    if session.sampling_rounds == 1 and not stop():
        width = phases.update_width(sampler_prompt_width(max(len(p) for p in prompts), floor), r.max_new_tokens)
        rows = session.derived.sequences_global_per_step
        batch = aot.abstract_update_batch(rows, width, session.mesh, sampler_logps=cfg.loss.tis_cap is not None)
        session.trainer.lower(session.params, session.opt_state, batch, session.ref_params).compile()
        done.append("update")
    return done


def start(cfg, run_dir) -> WarmStart | None:
    """Open `run_dir`'s session in the background (single-process runs only; else None)."""
    if jax.process_count() != 1:
        return None
    warm = _PENDING[_key(run_dir)] = WarmStart(cfg, run_dir)
    return warm


def pending(run_dir) -> bool:
    return _key(run_dir) in _PENDING


def take(run_dir) -> tuple[TrainSession, float] | None:
    """The session `start` opened for `run_dir` and when it started opening, or None."""
    warm = _PENDING.pop(_key(run_dir), None)
    return None if warm is None else warm.take()


def discard(run_dir) -> None:
    """Close a session `start` opened that no flow took (the flow never ran)."""
    warm = _PENDING.pop(_key(run_dir), None)
    if warm is not None:
        warm.close()
