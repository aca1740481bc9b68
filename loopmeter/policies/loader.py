"""Load a policy by preset name or file; errors name the file, line and field."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loopmeter.errors import ConfigError
from loopmeter.policies.policy import Policy
from loopmeter.policies.schema import PolicyModel

PRESETS = ("strict", "default", "data-restricted")
MAX_POLICY_BYTES = 256 * 1024  # the presets are about 2 KiB
MAX_YAML_NODES = 20_000  # values after aliases are expanded; a preset has about 150


def preset_path(name: str) -> Path:
    return Path(str(resources.files("loopmeter.policies") / "presets" / f"{name}.yaml"))


def list_presets() -> list[str]:
    folder = Path(str(resources.files("loopmeter.policies") / "presets"))
    return sorted(p.stem for p in folder.glob("*.yaml"))


@dataclass(frozen=True)
class PolicyText:
    """A policy file by content, as it travels to another machine (a Ray node): the node parses
    this text, never the path, which need not exist there. A preset travels as its name."""

    path: str  # where the driver read it: named in messages and recorded as the run's policy
    text: str
    sha256: str  # of the file's bytes: the hash recorded with the run and in the audit log

    def load(self) -> Policy:
        if hashlib.sha256(self.text.encode()).hexdigest() != self.sha256:
            raise PolicyError(self.path, None, "", f"the policy {self.sha256[:12]} arrived damaged (hash mismatch)")
        return parse_policy(self.text, Path(self.path), sha256=self.sha256)


def policy_content(ref: str | Path, policy: Policy | None = None) -> PolicyText | None:
    """How the policy `ref` travels: None for a preset (it stays a name), else the file's text as
    read and validated here, once (`policy`: the same ref, loaded already)."""
    if is_preset_name(ref):
        return None
    if policy is None or policy.text is None:
        policy = load_policy(ref)
    assert policy.text is not None  # parse_policy keeps it
    return PolicyText(str(policy.path), policy.text, policy.sha256)


def load_policy(ref: str | Path | Policy) -> Policy:
    """A preset name ("default", "strict", "data-restricted") or a path to a YAML file."""
    if isinstance(ref, Policy):
        return ref
    path = resolve_policy_path(ref)
    text, sha256 = read_policy_text(path)
    return parse_policy(text, path, sha256=sha256)


def is_preset_name(ref: str | Path) -> bool:
    """Whether `ref` names a shipped preset ("default"...) rather than a file."""
    return (isinstance(ref, str) and not ref.endswith((".yaml", ".yml")) and "/" not in ref
            and preset_path(ref).is_file())


def resolve_policy_path(ref: str | Path) -> Path:
    """The file a preset name or a path names."""
    if is_preset_name(ref):
        return preset_path(str(ref))
    path = Path(ref)
    if isinstance(ref, str) and not ref.endswith((".yaml", ".yml")) and "/" not in ref and not path.is_file():
        raise ConfigError(
            f"unknown policy '{ref}'",
            hint="presets: " + ", ".join(list_presets()) + "; or give a path to a YAML file",
        )
    if not path.exists():
        raise ConfigError(f"{path}: policy file not found", hint="give a preset name or an existing YAML file")
    return path


def read_policy_text(path: Path) -> tuple[str, str]:
    """(text, sha256 of the bytes) of a policy file: at most MAX_POLICY_BYTES, UTF-8, a regular file."""
    if not path.is_file():
        raise PolicyError(path, None, "", "not a regular file", hint="give a preset name or a YAML file")
    with path.open("rb") as fh:
        raw = fh.read(MAX_POLICY_BYTES + 1)
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(path, None, "", f"file is larger than {MAX_POLICY_BYTES // 1024} KiB; "
                          "a policy is a few KiB of YAML", hint="is this the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise PolicyError(path, line, "", f"not UTF-8 text (byte {exc.start})",
                          hint="save the policy as UTF-8") from None
    return text, hashlib.sha256(raw).hexdigest()


class PolicyError(ConfigError):
    """A policy file is wrong: `FILE:LINE: field.path: what is wrong` (exit 2)."""

    def __init__(self, path: Path | str, line: int | None, field: str, detail: str, hint: str | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {safe_text(field) + ': ' if field else ''}{detail}",
                         hint=hint or "see loopmeter/policies/presets/default.yaml for a valid policy")
        self.path, self.line, self.field, self.detail = str(path), line, safe_text(field), detail


def compose_yaml(text: str, path: Path | str) -> tuple[Any, Any]:
    """(data, root node) of one YAML document, refusing alias bombs and nesting too deep to parse."""
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(path, None, "", f"file is larger than {MAX_POLICY_BYTES // 1024} KiB; "
                          "a policy is a few KiB of YAML", hint="is this the right file?")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node, path)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(path, line, "", f"not valid YAML: {safe_text(str(getattr(exc, 'problem', None) or exc))}",
                          hint="fix the YAML syntax at that line") from exc
    except RecursionError:
        raise PolicyError(path, None, "", "YAML nested too deeply to read",
                          hint="a policy needs three or four levels of nesting") from None
    finally:
        loader.dispose()
    return data, node


def _check_expansion(root: Any, path: Path | str) -> None:
    """Refuse documents whose aliases expand to more than MAX_YAML_NODES nodes (a "billion laughs"),
    or that refer to themselves, without ever building the expansion."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise PolicyError(path, node.start_mark.line + 1, "", "a YAML alias refers to a node that contains it",
                              hint="remove the recursive alias")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: list[Any] = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
            _check_duplicates(node, path)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise PolicyError(path, child.start_mark.line + 1, "",
                                  f"YAML aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?)",
                                  hint="write the lists out; a policy needs no anchors or aliases")
        active.discard(key)
        sizes[key] = total
        return total

    size(root)


def _check_duplicates(node: Any, path: Path | str) -> None:
    """YAML keeps the last of two equal keys; a reviewer reads the first. Refuse both."""
    seen: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        if key.value in seen:
            raise PolicyError(path, line, key.value, f"duplicate key (first at line {seen[key.value]})",
                              hint="keep one; YAML would silently use the last")
        seen[key.value] = line


def parse_policy(text: str, path: Path, sha256: str | None = None) -> Policy:
    data, node = compose_yaml(text, path)
    if not isinstance(data, dict):
        raise PolicyError(path, 1, "", "a policy must be a mapping with at least 'name'",
                          hint="see loopmeter/policies/presets/default.yaml")
    try:
        model = PolicyModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = line_of(node, loc)
        field = ".".join(str(p) for p in loc) or "(top level)"
        raise PolicyError(path, line, field, _message(err), hint=_hint(err, loc)) from None
    digest = sha256 or hashlib.sha256(text.encode()).hexdigest()
    return Policy(model=model, path=path, sha256=digest, text=text)


def safe_text(text: str) -> str:
    """Text from a policy file, with control characters escaped (nothing raw reaches a terminal)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return safe_text(text if len(text) <= limit else text[:limit] + "...")


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"bad value {_short(err.get('input'))}: {err['msg'].lower()}"
    msg = safe_text(str(err["msg"]).removeprefix("Value error, "))
    return f"{msg} (got {_short(err.get('input'))})" if kind != "value_error" else msg


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


def line_of(node: Any, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the YAML node at `loc` (or the nearest ancestor found)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
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
