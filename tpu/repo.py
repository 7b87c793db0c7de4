"""The commit under test, checked on this machine before any VM exists (git argv only)."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from grpo_core.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _git(repo: str | Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


@dataclass(frozen=True)
class Checkout:
    """What the VM clones: `source` (a path or URL) at exactly `commit`."""

    source: str
    commit: str


def resolve_checkout(repo: str | Path, commit: str | None, provider_kind: str) -> Checkout:
    """Refuse a dirty tree; gcp clones from the remote, so the commit must be on it."""
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if dirty.returncode:
        raise UserError(f"{repo} is not a git repository; run the smoke flow from a clone of the project")
    if dirty.stdout.strip():
        changed = ", ".join(line[3:] for line in dirty.stdout.splitlines()[:5])
        raise UserError(f"{repo} has uncommitted changes ({changed}); commit or stash them so the VM tests what you have")
    sha = _git(repo, "rev-parse", "--verify", f"{commit or 'HEAD'}^{{commit}}")
    if sha.returncode:
        raise UserError(f"commit {commit!r} does not exist in {repo}; pass an existing commit with --commit")
    sha = sha.stdout.strip()
    if provider_kind == "local":
        return Checkout(str(Path(repo).resolve()), sha)
    url = _git(repo, "remote", "get-url", "origin")
    if url.returncode:
        raise UserError(f"{repo} has no 'origin' remote; the TPU VM clones the commit from it")
    if not _git(repo, "branch", "-r", "--contains", sha).stdout.strip():
        raise UserError(f"commit {sha[:12]} is not on any remote branch; push it so the TPU VM can clone it")
    return Checkout(url.stdout.strip(), sha)


def read_file_at(repo: str | Path, commit: str, path: str) -> str:
    """The file's text at `commit` (what the VM will read), not the working tree's."""
    shown = _git(repo, "show", f"{commit}:{path}")
    if shown.returncode:
        raise UserError(f"config {path} does not exist at commit {commit[:12]}; pass a path relative to the repo root")
    return shown.stdout
