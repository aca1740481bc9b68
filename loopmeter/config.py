"""Settings: embedded defaults < `$LOOPMETER_HOME/loopmeter.toml` < a repo's
`[tool.loopmeter]` < `LOOPMETER_*` environment variables.

A repository is somebody else's input (a cloned project, a worktree an agent wrote), so its
`[tool.loopmeter]` may not lower protection: the settings in `REPO_GUARDED` (sandbox, policy,
store, audit anchor copy, price file) are ignored unless the user trusts that repository with
them, and the budgets in `REPO_TIGHTEN_ONLY` may only be lowered. The user trusts a repository
in their own `loopmeter.toml`:

    trust_repo_settings = ["policy"]                       # any repository may set policy
    [trust_repo_settings]                                  # or, per repository directory:
    "/home/me/src/project" = ["policy", "max_usd"]

or for one command with `LOOPMETER_TRUST_REPO_SETTINGS=policy,max_usd`. Every ignored
setting is printed once on stderr (file, key, how to allow it) and kept in
`Settings.ignored` for `loopmeter doctor`.

Kept free of heavy imports: every command reads its settings at start-up.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopmeter.errors import ConfigError

APP_NAME = "loopmeter"


def default_home() -> Path:
    env = os.environ.get("LOOPMETER_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


@dataclass
class ValueModel:
    """How ROI values an outcome. Unset fields mean 'no value model', so ROI is not shown."""

    value_per_merged_outcome: float | None = None
    hourly_rate: float | None = None

    @property
    def configured(self) -> bool:
        return self.value_per_merged_outcome is not None or self.hourly_rate is not None


@dataclass(frozen=True)
class IgnoredSetting:
    """A repository setting loopmeter did not apply, and why."""

    file: str
    key: str
    value: str  # repr of what the repository asked for
    reason: str
    allow: str  # how the user can allow it

    def line(self) -> str:
        return (f"loopmeter: warning: {self.file}: ignored [tool.loopmeter] {self.key} = {self.value}"
                f" ({self.reason}); {self.allow}")


@dataclass
class Settings:
    home: Path
    db_url: str = ""
    price_file: Path | None = None
    timezone: str | None = None
    user: str = ""
    policy: str = "default"
    sandbox: str = "bwrap"
    concurrency: int = 2
    max_iters: int = 5
    max_usd: float = 2.0
    max_minutes: float = 20.0
    audit_anchor_copy: Path | None = None
    value: ValueModel = field(default_factory=ValueModel)
    # [vendors.NAME] tables (api_url, and what a connector reads, e.g. credit_usd), your own file only
    vendors: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [people]: a vendor's user (email, API key name) -> the loopmeter user, your own file only
    people: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # where each setting came from
    ignored: list[IgnoredSetting] = field(default_factory=list)  # repo settings that were not applied

    @property
    def db_path(self) -> Path | None:
        if self.db_url.startswith("sqlite:///"):
            return Path(self.db_url.removeprefix("sqlite:///"))
        return None

    @property
    def checkpoint_path(self) -> Path:
        return self.home / "checkpoints.sqlite"

    @property
    def audit_anchor(self) -> Path:
        return self.home / "audit.anchor"

    @property
    def worktrees_dir(self) -> Path:
        return self.home / "worktrees"


_SIMPLE_KEYS = {
    "db_url": str,
    "price_file": Path,
    "timezone": str,
    "user": str,
    "policy": str,
    "sandbox": str,
    "concurrency": int,
    "max_iters": int,
    "max_usd": float,
    "max_minutes": float,
    "audit_anchor_copy": Path,
}
_VALUE_KEYS = {"value_per_merged_outcome": float, "hourly_rate": float}

# What a repository's [tool.loopmeter] may set only when the user trusts it to (and why).
REPO_GUARDED = {
    "sandbox": "a repository may not choose the sandbox runner",
    "policy": "a repository may not choose the sandbox policy",
    "db_url": "a repository may not choose the store, which holds the audit log",
    "audit_anchor_copy": "a repository may not choose where the audit anchor is written",
    "price_file": "a repository may not choose the prices budgets are counted in",
}
# Budgets a repository may lower but not raise (unless trusted).
REPO_TIGHTEN_ONLY = ("max_usd", "max_minutes", "max_iters")
TRUST_KEY = "trust_repo_settings"
TRUST_ENV = "LOOPMETER_TRUST_REPO_SETTINGS"
_warned: set[tuple[str, str, str]] = set()  # each ignored setting is printed once per process


def _convert(key: str, raw: Any, origin: str) -> Any:
    """The value of simple setting `key` (a name in _SIMPLE_KEYS) from its TOML or environment text."""
    conv = _SIMPLE_KEYS[key]
    try:
        return Path(str(raw)).expanduser() if conv is Path else conv(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: setting '{key}' has a bad value {raw!r}: {exc}") from exc


def _apply(settings: Settings, data: dict[str, Any], origin: str) -> None:
    for key, raw in data.items():
        key_n = key.replace("-", "_")
        if key_n in _SIMPLE_KEYS:
            setattr(settings, key_n, _convert(key_n, raw, origin))
        elif key_n in _VALUE_KEYS:
            try:
                setattr(settings.value, key_n, float(raw))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{origin}: setting '{key}' has a bad value {raw!r}: {exc}") from exc
        elif key_n == "value" and isinstance(raw, dict):
            _apply(settings, raw, origin)
        elif key_n in _TABLE_KEYS:
            _apply_table(settings, key_n, raw, origin)
        else:
            raise ConfigError(
                f"{origin}: unknown setting '{key}'",
                hint="known settings: " + ", ".join(sorted([*_SIMPLE_KEYS, *_VALUE_KEYS, *_TABLE_KEYS])),
            )


# Tables only the user's own loopmeter.toml may hold: a repository choosing where a vendor key
# is sent could read the key, and one renaming people could move spend between them.
_TABLE_KEYS = ("vendors", "people")


def _apply_table(settings: Settings, key: str, raw: Any, origin: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: [{key}] must be a table", hint=f"e.g. [{key}.anthropic] or [{key}]")
    if key == "people":
        for name, user in raw.items():
            if not isinstance(user, str) or not user:
                raise ConfigError(f"{origin}: [people] {name!r} must name a loopmeter user (a string), not {user!r}",
                                  hint='e.g. "alice@example.com" = "alice"')
            settings.people[str(name)] = user
        return
    for vendor, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [vendors.{vendor}] must be a table", hint='e.g. api_url = "https://..."')
        settings.vendors.setdefault(str(vendor).lower(), {}).update(table)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax at that line") from exc


def find_repo_pyproject(start: Path) -> Path | None:
    for parent in [start, *start.parents]:
        candidate = parent / "pyproject.toml"
        if candidate.is_file():
            return candidate
        if (parent / ".git").exists():
            return None
    return None


def _trust_names(raw: Any, origin: str) -> set[str]:
    allowed = {*REPO_GUARDED, *REPO_TIGHTEN_ONLY}
    names = [n.strip() for n in raw.split(",") if n.strip()] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{origin}: {TRUST_KEY} must be a list of setting names",
                          hint=f'e.g. {TRUST_KEY} = ["policy"]; settings: ' + ", ".join(sorted(allowed)))
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise ConfigError(f"{origin}: {TRUST_KEY} names {', '.join(unknown)}, which a repository never needs "
                          "to be trusted with", hint="settings to trust: " + ", ".join(sorted(allowed)))
    return set(names)


def _trusted(raw: Any, origin: str, repo_dir: Path | None) -> set[str]:
    """What the user's own config trusts the repository at `repo_dir` to set."""
    if raw is None:
        return set()
    if not isinstance(raw, dict):
        return _trust_names(raw, origin)  # a plain list: every repository
    trusted: set[str] = set()
    for directory, names in raw.items():
        names = _trust_names(names, f"{origin} [{TRUST_KEY}] {directory!r}")
        if repo_dir is not None and Path(directory).expanduser().resolve() == repo_dir:
            trusted |= names
    return trusted


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _repo_section(settings: Settings, section: dict[str, Any], pyproject: Path, trusted: set[str],
                  home_file: Path) -> dict[str, Any]:
    """The part of a repo's [tool.loopmeter] that may be applied; the rest goes to settings.ignored."""
    origin = f"{pyproject} [tool.loopmeter]"
    repo_dir = str(pyproject.parent)
    kept: dict[str, Any] = {}
    nested: dict[str, Any] = section["value"] if isinstance(section.get("value"), dict) else {}
    flat = {**{k: v for k, v in section.items() if not (k == "value" and nested)}, **nested}
    for key, raw in flat.items():
        key_n = key.replace("-", "_")
        allow = (f'to allow it, add "{key_n}" under [{TRUST_KEY}] "{repo_dir}" in {home_file}'
                 f" (or set {TRUST_ENV}={key_n} for one command)")
        reason = None
        if key_n == TRUST_KEY:
            reason, allow = "only your own loopmeter.toml can trust a repository", f"set it in {home_file}"
        elif key_n in _TABLE_KEYS:
            reason, allow = "only your own loopmeter.toml sets vendor endpoints and people", f"set it in {home_file}"
        elif key_n in REPO_GUARDED and key_n not in trusted:
            if _convert(key_n, raw, origin) != getattr(settings, key_n):  # asking for what is set anyway is fine
                reason = REPO_GUARDED[key_n]
        elif key_n in REPO_TIGHTEN_ONLY and key_n not in trusted:
            current = getattr(settings, key_n)
            if _convert(key_n, raw, origin) > current:
                reason = f"a repository may lower {key_n} but not raise it above {current}"
        if reason is None:
            kept[key] = raw
            continue
        ignored = IgnoredSetting(_printable(str(pyproject)), _printable(key_n), _printable(repr(raw)), reason,
                                 _printable(allow))
        settings.ignored.append(ignored)
        if (ignored.file, ignored.key, ignored.value) not in _warned:
            _warned.add((ignored.file, ignored.key, ignored.value))
            print(ignored.line(), file=sys.stderr)
    return kept


def load_settings(cwd: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    home = Path(env["LOOPMETER_HOME"]).expanduser() if env.get("LOOPMETER_HOME") else default_home()
    settings = Settings(home=home)
    settings.sources.append("defaults")

    home_file = home / "loopmeter.toml"
    trust_raw: Any = None
    if home_file.is_file():
        data = _read_toml(home_file)
        trust_raw = data.pop(TRUST_KEY, None)
        _trusted(trust_raw, str(home_file), None)  # a mistake in it is reported even outside a repository
        _apply(settings, data, str(home_file))
        settings.sources.append(str(home_file))

    pyproject = find_repo_pyproject((cwd or Path.cwd()).resolve())
    if pyproject is not None:
        section = _read_toml(pyproject).get("tool", {}).get("loopmeter")
        if isinstance(section, dict):
            trusted = _trusted(trust_raw, str(home_file), pyproject.parent)
            if env.get(TRUST_ENV):
                trusted |= _trust_names(env[TRUST_ENV], TRUST_ENV)
            kept = _repo_section(settings, section, pyproject, trusted, home_file)
            _apply(settings, kept, f"{pyproject} [tool.loopmeter]")
            ignored = [i.key for i in settings.ignored]
            settings.sources.append(f"{pyproject} [tool.loopmeter]"
                                    + (f" (ignored: {', '.join(ignored)})" if ignored else ""))

    overrides = {
        k.removeprefix("LOOPMETER_").lower(): v
        for k, v in env.items()
        if k.startswith("LOOPMETER_") and k not in ("LOOPMETER_HOME", "LOOPMETER_DEBUG")
    }
    known = {k: v for k, v in overrides.items() if k in _SIMPLE_KEYS or k in _VALUE_KEYS}
    if known:
        _apply(settings, known, "environment")
        settings.sources.append("environment")

    if not settings.db_url:
        settings.db_url = f"sqlite:///{home / 'loopmeter.db'}"
    if not settings.user:
        settings.user = env.get("USER") or _safe_user()
    return settings


def _safe_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def mask_url(url: str) -> str:
    """Hide the password in a database URL: postgresql://u:***@host/db."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


def as_dict(settings: Settings) -> dict[str, Any]:
    data = dataclasses.asdict(settings)
    data["db_url"] = mask_url(settings.db_url)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
