"""The phase cache: a Prefect cache policy keyed on what a phase actually depends on.

key = sha256(run id, step, phase, digest of the config fields the phase reads, digest of
the upstream manifest, params version [rollout/eval], prompt ids [rollout]).

Key records and result payloads live under the run directory (`prefect/keys`,
`prefect/results`), so a run directory carries its own cache. SERIALIZABLE isolation
with a file lock (an flock, which the OS releases if its holder is killed) means two
processes on the same run cannot both compute a phase: the second waits and reuses the
first one's manifest. A cached manifest whose artifact is
missing or whose checksum no longer matches is dropped (with a warning), so the phase
runs again instead of handing the next phase a broken file.
"""
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer
from pydantic import BaseModel, Field

from grpo_core.artifacts import file_is_intact
from schemas.base import unset_new_options
from schemas.manifests import PhaseManifest
from tasks.locks import FlockLockManager

logger = logging.getLogger("grpo_flows.cache")


class PhaseInput(BaseModel):
    """Everything a phase task's cache key depends on, passed as the task's one argument."""

    run_id: str
    run_dir: str
    step: int
    phase: str
    process_index: int = Field(0, description="JAX process that computes this shard of the phase.")
    config_digest: str = Field(description="sha256 of the config fields this phase reads.")
    upstream: PhaseManifest | None = None
    params_version: int | None = Field(None, description="Updates applied to the params used (rollout, eval).")
    prompt_ids: list[int] | None = None

    def cache_key(self) -> str:
        body = {
            "run_id": self.run_id,
            "step": self.step,
            "phase": self.phase,
            "process": self.process_index,
            "config": self.config_digest,
            "upstream": self.upstream.digest if self.upstream else None,
            "params_version": self.params_version,
            "prompt_ids": self.prompt_ids,
        }
        blob = json.dumps(body, sort_keys=True).encode()
        return f"{self.phase}-{self.step:06d}-{hashlib.sha256(blob).hexdigest()[:32]}"


def config_digest(*sections: Any) -> str:
    """sha256 of the given config sections/values (pydantic models are dumped as JSON,
    without the options added later that hold their default: schemas.base.NEW_OPTION)."""
    dumped = [s.model_dump(mode="json", exclude=unset_new_options(s)) if isinstance(s, BaseModel) else s
              for s in sections]
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()


def dump_without(section: BaseModel, *fields: str) -> dict:
    """`section` as config_digest dumps it, less `fields` (options that change no result)."""
    return section.model_dump(mode="json", exclude=unset_new_options(section) | {f: True for f in fields})


def storage_dirs(run_dir: str | Path) -> dict[str, Path]:
    base = Path(run_dir) / "prefect"
    return {"keys": base / "keys", "results": base / "results", "locks": base / "locks"}


class RunKeyStorage(LocalFileSystem):
    """Cache key records that name their payload relative to `prefect/results`.

    Prefect writes the payload's absolute path into each key record, and refuses to read
    a path outside the results folder: a run directory moved or copied elsewhere would
    recompute everything. Records are rewritten to the payload's file name on the way in
    and on the way out, so a record that still holds an absolute path reads as well.
    """

    _block_type_name = "grpo run key storage"  # its own block type, not a second LocalFileSystem

    # Prefect calls the sync methods with `_sync=True` (they dispatch to the async ones
    # otherwise); these always run synchronously, and the async ones serve async callers.
    def write_path(self, path: str, content: bytes, **_dispatch) -> str:
        return super().write_path(path, _relative_record(content), _sync=True)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await super().awrite_path(path, _relative_record(content))

    def read_path(self, path: str, **_dispatch) -> bytes:
        return _relative_record(super().read_path(path, _sync=True))

    async def aread_path(self, path: str) -> bytes:
        return _relative_record(await super().aread_path(path))


def _relative_record(content: bytes) -> bytes:
    record = json.loads(content)
    key = record.get("storage_key")
    if key and Path(key).is_absolute():
        record["storage_key"] = Path(key).name  # payloads are flat files named by their cache key
    return json.dumps(record).encode()


def _stores(run_dir: str | Path) -> tuple[RunKeyStorage, LocalFileSystem]:
    dirs = storage_dirs(run_dir)
    return RunKeyStorage(basepath=str(dirs["keys"])), LocalFileSystem(basepath=str(dirs["results"]))


@dataclass
class PhaseCachePolicy(CachePolicy):
    """Cache key from the task's `PhaseInput`; drops records whose artifact is broken."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters, **kwargs) -> str | None:
        phase_input = inputs.get("phase_input")
        if not isinstance(phase_input, PhaseInput):
            return None
        key = phase_input.cache_key()
        drop_if_broken(key, phase_input.run_dir)
        return key


def drop_if_broken(key: str, run_dir: str) -> bool:
    """Delete the cache record of `key` unless its artifact is intact; True when one remains."""
    return cached_manifest(key, run_dir) is not None


def cached_manifest(key: str, run_dir: str | Path) -> PhaseManifest | None:
    """The cached manifest of `key` if its artifact is intact; a broken record is deleted."""
    record_path = storage_dirs(run_dir)["keys"] / key
    if not record_path.exists():
        return None
    try:
        keys, results = _stores(run_dir)
        store = ResultStore(metadata_storage=keys, result_storage=results, serializer=JSONSerializer())
        manifest = store.read(key).result
        intact = isinstance(manifest, PhaseManifest) and file_is_intact(Path(run_dir) / manifest.path, manifest.sha256)
    except Exception as exc:  # an unreadable record is as good as none
        logger.warning("cache record %s is unreadable (%s); recomputing", key, exc)
        intact = False
    else:
        if not intact:
            logger.warning("cached artifact for %s is missing or its sha256 changed; recomputing", key)
    if not intact:
        record_path.unlink(missing_ok=True)
        return None
    return manifest


def cache_options(run_dir: str | Path) -> dict:
    """Task options that put this run's cache records, payloads and locks under run_dir."""
    dirs = storage_dirs(run_dir)
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    policy = PhaseCachePolicy().configure(
        key_storage=_stores(run_dir)[0], lock_manager=FlockLockManager(dirs["locks"]), isolation_level="SERIALIZABLE",
    )
    # A path, not a block: Prefect only accepts blocks saved on the server as task options.
    return {"cache_policy": policy, "persist_result": True, "result_storage": dirs["results"],
            "result_serializer": "json"}
