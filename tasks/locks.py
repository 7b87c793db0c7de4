"""A Prefect lock manager on fcntl.flock, for the phase cache's SERIALIZABLE isolation.

Prefect's FileSystemLockManager records a lock as a file that only its holder deletes:
a holder killed with SIGKILL (a preempted VM, an OOM kill) leaves the lock behind and
the resumed run waits on it forever. An flock is released by the OS when its holder
dies, so a crash can never leave a phase locked. `hold_timeout` is therefore not needed
and is ignored.
"""
import asyncio
import fcntl
import time
from pathlib import Path
from typing import IO

_POLL_SECONDS = 0.05


class FlockLockManager:
    """Prefect's `LockManager` protocol (runtime-checkable, so no base class: this module
    stays free of the Prefect import for `grpo status`, which only asks `lock_holder`)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._held: dict[str, tuple[str, IO]] = {}

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.lock"

    def _try_lock(self, handle: IO) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        if self.is_lock_holder(key, holder):
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self._path(key), "a+")
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._try_lock(handle):
            if deadline is not None and time.monotonic() >= deadline:
                handle.close()
                return False
            time.sleep(_POLL_SECONDS)
        self._held[key] = (holder, handle)
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        if not self.is_lock_holder(key, holder):
            raise ValueError(f"no lock for transaction with key {key} held by {holder}")
        _, handle = self._held.pop(key)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    def is_locked(self, key: str) -> bool:
        if key in self._held:
            return True
        if not self._path(key).exists():
            return False
        with open(self._path(key), "a+") as handle:
            if not self._try_lock(handle):
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        return key in self._held and self._held[key][0] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.wait_for_lock, key, timeout)


def lock_holder(path: Path) -> str | None:
    """The pid written in lock file `path` while some process holds its flock, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
