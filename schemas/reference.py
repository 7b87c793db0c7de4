"""The configuration reference page, generated from `RunConfig`.

`python -m schemas.reference` writes docs/reference/configuration.md: one table per section
with every field's dotted name, type, default, bounds, allowed values and description, all
read from the Pydantic schema, so the page cannot say what the schema does not.
`python -m schemas.reference --check` exits 1 when the committed page differs from what the
schema generates now (CI runs the test that does the same).
"""
import argparse
import html
import json
import sys
import types
import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from schemas.run import RunConfig

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "configuration.md"
REGENERATE = "python -m schemas.reference"

HEADER = f"""# Configuration reference

<!-- Generated from schemas.RunConfig by `{REGENERATE}`; edit the schema, not this page. -->

A run is one YAML file validated by `schemas.RunConfig`, plus `--set dotted.key=value`
overrides on the command line (`grpo train`, `grpo print-config`, `grpo preflight`,
`grpo eval`). Unknown keys are refused with a sentence naming them, and every value is
checked against the bounds below before anything runs. `grpo print-config` prints the
resolved YAML and the derived batch numbers (per-process and per-device prompts and
sequences, micro-batch size, gradient-accumulation steps, warmup steps).

Lists of sections are written `name[]` (`rewards[].weight`); a section that may be null
(`overlong_penalty`) is off when null. `required` marks a field without a default: it must
be given whenever its section is.
"""

_BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length ≥"),
    (annotated_types.MaxLen, "max_length", "length ≤"),
)


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _members(annotation) -> list:
    """The alternatives of a union annotation (`X | None` -> [X, NoneType]); else [annotation]."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _type_name(annotation) -> str:
    names = []
    for tp in _members(annotation):
        origin = typing.get_origin(tp)
        if tp is type(None):
            names.append("null")
        elif origin is typing.Literal:
            kinds = {type(v).__name__ for v in typing.get_args(tp)}
            names.append("one of" if len(kinds) > 1 else f"{kinds.pop()} (one of)")
        elif origin is list:
            names.append(f"list of {_type_name(typing.get_args(tp)[0])}")
        elif _is_model(tp):
            names.append("section")
        else:
            names.append(getattr(tp, "__name__", str(tp)))
    return " or ".join(names)


def _allowed(annotation) -> str:
    values = [v for tp in _members(annotation) if typing.get_origin(tp) is typing.Literal for v in typing.get_args(tp)]
    return ", ".join(f"`{v}`" for v in values)


def _bounds(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for kind, attr, symbol in _BOUNDS:
            if isinstance(meta, kind):
                parts.append(f"{symbol} {getattr(meta, attr)}")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list):
        value = [v.model_dump() if isinstance(v, BaseModel) else v for v in value]
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(name: str, field: FieldInfo) -> str:
    cells = [f"`{name}`", _type_name(field.annotation), _default(field), _bounds(field),
             _allowed(field.annotation), html.escape(field.description or "", quote=False)]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _nested_model(annotation):
    """The section class inside a field's annotation (X, X | None, list[X], Literal | X), if any."""
    for tp in _members(annotation):
        if typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        if _is_model(tp):
            return tp
    return None


def _suffix(annotation) -> str:
    return "[]" if any(typing.get_origin(tp) is list for tp in _members(annotation)) else ""


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        rows.append(_row(dotted, field))
        inner = _nested_model(field.annotation)
        if inner is not None:
            rows.extend(_rows(inner, f"{dotted}{_suffix(field.annotation)}."))
    return rows


TABLE_HEAD = ["| field | type | default | bounds | allowed values | description |",
              "| --- | --- | --- | --- | --- | --- |"]


def render() -> str:
    """The whole reference page as markdown, one section per top-level field of RunConfig."""
    parts = [HEADER]
    for name, field in RunConfig.model_fields.items():
        parts.append(f"\n## `{name}`\n\n{field.description or ''}\n")
        parts.extend(TABLE_HEAD)
        parts.append(_row(name, field))
        inner = _nested_model(field.annotation)
        if inner is not None:
            parts.extend(_rows(inner, f"{name}{_suffix(field.annotation)}."))
    return "\n".join(parts) + "\n"


def is_current(path: Path = PAGE) -> bool:
    """True when the page at `path` is exactly what the schema generates now."""
    return path.is_file() and path.read_text(encoding="utf-8") == render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is out of date; write nothing")
    parser.add_argument("--output", type=Path, default=PAGE, help="the page to write or check")
    args = parser.parse_args(argv)
    if args.check:
        if is_current(args.output):
            return 0
        print(f"{args.output} is out of date with schemas.RunConfig; regenerate it with `{REGENERATE}` "
              "and commit it.", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
