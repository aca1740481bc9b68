"""Load a policy by preset name or file; errors name the file, line and field."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loopmeter.errors import ConfigError
from loopmeter.policies.policy import Policy
from loopmeter.policies.schema import PolicyModel

PRESETS = ("strict", "default", "data-restricted")


def preset_path(name: str) -> Path:
    return Path(str(resources.files("loopmeter.policies") / "presets" / f"{name}.yaml"))


def list_presets() -> list[str]:
    folder = Path(str(resources.files("loopmeter.policies") / "presets"))
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_policy(ref: str | Path) -> Policy:
    """A preset name ("default", "strict", "data-restricted") or a path to a YAML file."""
    if isinstance(ref, Policy):
        return ref
    path = Path(ref)
    if isinstance(ref, str) and not ref.endswith((".yaml", ".yml")) and "/" not in ref:
        candidate = preset_path(ref)
        if candidate.is_file():
            path = candidate
        elif not path.is_file():
            raise ConfigError(
                f"unknown policy '{ref}'",
                hint="presets: " + ", ".join(list_presets()) + "; or give a path to a YAML file",
            )
    if not path.is_file():
        raise ConfigError(f"{path}: policy file not found", hint="give a preset name or an existing YAML file")
    raw = path.read_bytes()
    return parse_policy(raw.decode("utf-8"), path, sha256=hashlib.sha256(raw).hexdigest())


def parse_policy(text: str, path: Path, sha256: str | None = None) -> Policy:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}",
                          hint="fix the YAML syntax at that line") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a policy must be a mapping with at least 'name'",
                          hint="see loopmeter/policies/presets/default.yaml")
    try:
        model = PolicyModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = _line_of(node, loc)
        field = ".".join(str(p) for p in loc) or "(top level)"
        raise ConfigError(f"{path}:{line}: {field}: {_message(err)}",
                          hint=_hint(err, loc)) from exc
    digest = sha256 or hashlib.sha256(text.encode()).hexdigest()
    return Policy(model=model, path=path, sha256=digest)


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"bad value {err.get('input')!r}: {err['msg'].lower()}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{msg} (got {err.get('input')!r})" if kind != "value_error" else msg


def _hint(err: Any, loc: tuple[Any, ...]) -> str:
    if err["type"] == "extra_forbidden":
        parent = PolicyModel
        for part in loc[:-1]:
            field = parent.model_fields.get(str(part)) if hasattr(parent, "model_fields") else None
            ann = getattr(field, "annotation", None) if field else None
            if ann is None or not hasattr(ann, "model_fields"):
                break
            parent = ann
        return "known keys here: " + ", ".join(parent.model_fields)
    return "see loopmeter/policies/presets/default.yaml for a valid policy"


def _line_of(node: Any, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the YAML node at `loc` (or the nearest ancestor found)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    # an unknown key is reported at the key itself
                    node = value if part != loc[-1] else key
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line
