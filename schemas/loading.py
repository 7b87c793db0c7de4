"""Config loading: YAML file -> `--set dotted.key=value` overrides -> validated RunConfig.

Override values are parsed as YAML scalars/lists (ints, floats, bools, null, [a, b]) and
then typed by the schema. Every failure is a `UserError` whose message names the file or
dotted field, the bad value and what is allowed.
"""
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from grpo_core.errors import UserError
from schemas.run import RunConfig


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.optimizer.name=adamw' -> (['train', 'optimizer', 'name'], 'adamw')."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise UserError(f"--set {text!r} is not of the form dotted.key=value (e.g. --set rollout.n=8)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise UserError(f"--set {'.'.join(path)}: {where} is a value, not a section; set {where} itself")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing YAML file with --config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; pass a YAML file with --config") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read ({exc.strerror or exc}); check its permissions") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path} is not valid YAML{where}; fix the syntax there") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections (model:, rollout:, ...)")
    return data


def _describe(error: dict) -> str:
    field = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown config key {field}; check its spelling against `grpo print-config`"
    if error["type"] == "missing":
        return f"{field} is required"
    if error["type"] == "value_error" and isinstance(error.get("input"), dict):
        # A model-level validator: its message names the fields; the input is a whole
        # (sub)config, too long and too nested to repeat.
        reason = error["msg"].removeprefix("Value error, ")
        return f"{field}: {reason}" if field else reason
    return f"{field or 'config'}={error.get('input')!r} is not allowed: {error['msg']}"


def format_validation_error(exc: ValidationError, source: str = "") -> str:
    lines = [_describe(e) for e in exc.errors(include_url=False)]
    prefix = f"invalid config{f' ({source})' if source else ''}: "
    return prefix + "; ".join(lines)


def build_run_config(data: dict, overrides: list[str] = (), source: str = "") -> RunConfig:
    for text in overrides:
        apply_override(data, *parse_override(text))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """YAML file (or all defaults when path is None), then overrides, then validation."""
    data = read_yaml(path) if path is not None else {}
    return build_run_config(data, list(overrides), source=str(path or "defaults"))


def config_to_yaml(cfg: RunConfig, derived=None) -> str:
    body = cfg.model_dump(mode="json")
    if derived is not None:
        body["derived"] = derived.model_dump(mode="json")
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
