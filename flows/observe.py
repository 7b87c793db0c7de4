"""What a run reports: metrics.jsonl, a `step=N` log line, a live view in a terminal, W&B
(process 0), Prefect artifacts (metrics table, progress, summary), a reward-curve PNG and
summary.json.

Only process 0 writes run-level files and talks to W&B and the Prefect API.
"""
import hashlib
import json
import logging
import re
import time

import jax
import numpy as np

from flows.console import LiveView, live_view_allowed, step_line
from flows.wandb_sink import WandbSink
from grpo_core import compiles
from grpo_core.artifacts import atomic_write_bytes
from tasks.multihost import combine_stats, host_value

logger = logging.getLogger("grpo_flows.train")


def params_sha256(params) -> str:
    """sha256 over every parameter's bytes, leaves in a fixed (sorted key path) order."""
    digest = hashlib.sha256()
    leaves = sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0]))
    for path, leaf in leaves:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(host_value(leaf)))  # the buffer itself, no bytes copy
    return digest.hexdigest()


def step_record(step: int, manifests: dict, timings: dict[str, float], wall: float) -> dict:
    """One metrics.jsonl line: every phase's stats, timings and orchestration overhead."""
    record = {"step": step}
    for manifest in manifests.values():
        record.update(manifest.stats)
    # Phase statistics have the same keys on every process (a collective needs that);
    # the timings below are this process's own: which phases ran may differ per process.
    record = combine_stats(record)
    computed = sum(timings.values())
    record.update({f"time_{phase}": seconds for phase, seconds in timings.items()})
    record["step_seconds"] = wall
    record["cached"] = not timings
    if timings:
        record["orchestration_overhead_s"] = max(wall - computed, 0.0)
        record["orchestration_overhead_frac"] = record["orchestration_overhead_s"] / max(wall, 1e-9)
    rollout_seconds = timings.get("rollout") or manifests["rollout"].seconds
    record["rollout_tokens_per_s"] = manifests["rollout"].stats.get("sampled_tokens", 0.0) / max(rollout_seconds, 1e-9)
    return record


def artifact_key(run_id: str, kind: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{run_id}-{kind}".lower()).strip("-")


def compile_fields(new: list) -> dict:
    """compiles_<phase> (programs compiled or loaded from the cache) and compile_s_<phase>."""
    fields = {}
    for phase, row in compiles.by_phase(new).items():
        fields[f"compiles_{phase}"] = row["compiles"]
        fields[f"compile_s_{phase}"] = row["seconds"]
    return fields


def checkpoint_fields(saved) -> dict:
    """A save's own times: checkpoint_wait_previous_s (part of time_checkpoint, the seconds
    the step waited for it) and checkpoint_write_s (copy to commit, mostly in the background)."""
    fields = {"checkpoint_wait_previous_s": saved.wait_previous_s}
    if saved.write_s is not None:
        fields["checkpoint_write_s"] = saved.write_s
    return fields


class RunObserver:
    def __init__(self, session, opened: float | None = None):
        """opened: perf_counter() when the session started opening (time to the first step)."""
        self.session, self.cfg = session, session.cfg
        self.is_main = session.process_index == 0
        self.path = session.run_dir / "metrics.jsonl"
        self.records = self._load()
        self.started = time.perf_counter()
        self.opened = self.started if opened is None else opened
        self.first_step_s: float | None = None
        self._compile_mark = getattr(session, "compile_mark", compiles.mark())
        self.wandb = WandbSink(self.cfg, session.run_dir) if self.is_main else None
        show = self.is_main and self.cfg.logging.progress_bar and live_view_allowed()
        self.live = LiveView(self.cfg.train.steps) if show else None
        self._progress_artifact = None

    def _load(self) -> dict[int, dict]:
        if not self.path.exists():
            return {}
        return {r["step"]: r for r in map(json.loads, self.path.read_text().splitlines()) if r}

    def step_done(self, step: int, manifests: dict, wall: float) -> None:
        record = step_record(step, manifests, self.session.timings.get(step, {}), wall)
        if record["cached"] and step in self.records:
            record = {**self.records[step], "cached": True, "step_seconds": wall}
        elif self.first_step_s is None:
            self.first_step_s = time.perf_counter() - self.opened
        new = compiles.since(self._compile_mark)
        self._compile_mark += len(new)
        self.records[step] = {**record, **compile_fields(new)}
        self._add_checkpoint_times()
        if not self.is_main:
            return
        self._write_metrics()
        logger.info(step_line(record))
        if self.wandb and not record["cached"]:
            self.wandb.log(record, step)
        if self.live:
            self.live.step_done(record)
        self._prefect_progress(step)

    def _add_checkpoint_times(self) -> None:
        """Saves finish after their step's record was made: their times are added as known."""
        for step, saved in self.session.saves.items():
            if step in self.records:
                self.records[step].update(checkpoint_fields(saved))

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(self.records[k], sort_keys=True) + "\n" for k in sorted(self.records))
        atomic_write_bytes(self.path, lines.encode())

    def _prefect_progress(self, step: int) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = 100.0 * (step + 1) / self.cfg.train.steps
        if self._progress_artifact is None:
            self._progress_artifact = create_progress_artifact(
                percent, key=artifact_key(self.session.run_id, "progress"), description="training steps done", _sync=True)
        else:
            update_progress_artifact(self._progress_artifact, percent, _sync=True)

    def finish(self) -> dict:
        from flows.report import write_reports

        summary = {
            "run_id": self.session.run_id,
            "steps": self.cfg.train.steps,
            "final_metrics": self.records.get(self.cfg.train.steps - 1, {}),
            "params_sha256": params_sha256(self.session.params),
            "wall_seconds": time.perf_counter() - self.started,
            "time_to_first_step_s": self.first_step_s,
            "compiles": compiles.by_phase(compiles.since(getattr(self.session, "compile_mark", 0))),
            "checkpoints": self._checkpoint_summary(),
        }
        summary.update(reward_trend(self.records))
        summary.update(padding_summary(self.records))
        self._add_checkpoint_times()
        if self.is_main:
            self._write_metrics()
            write_reports(self.session, self.records, summary, artifact_key)
            if self.wandb:
                self.wandb.summary(summary)
        return summary

    def _checkpoint_summary(self) -> dict:
        """This process's saves: how many, the seconds they held their steps and their writes."""
        saves = list(self.session.saves.values())
        written = [s.write_s for s in saves if s.write_s is not None]
        return {"asynchronous": self.cfg.checkpoint.asynchronous, "saves": len(saves),
                "blocking_s_mean": float(np.mean([s.blocking_s for s in saves])) if saves else None,
                "write_s_mean": float(np.mean(written)) if written else None}

    def close(self) -> None:
        if self.live:
            self.live.stop()
        if self.wandb:
            self.wandb.close()


def reward_trend(records: dict[int, dict]) -> dict:
    """Mean correctness of the first and last five steps (the quickstart's headline)."""
    steps = sorted(records)
    values = [records[s].get("reward_gsm8k_correct_mean") for s in steps]
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {"first5_correct_mean": float(np.mean(values[:5])), "last5_correct_mean": float(np.mean(values[-5:]))}


def padding_summary(records: dict[int, dict]) -> dict:
    """Mean padded/real token ratios of the updates (prompt slots: the bucketing's cost)."""
    out = {}
    for name in ("pad_prompt_ratio", "pad_update_ratio"):
        values = [r[name] for r in records.values() if name in r]
        if values:
            out[f"{name}_mean"] = float(np.mean(values))
    return out
