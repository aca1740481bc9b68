"""Settings: embedded defaults < `$LOOPMETER_HOME/loopmeter.toml` < a repo's
`[tool.loopmeter]` < `LOOPMETER_*` environment variables.

Kept free of heavy imports: every command reads its settings at start-up.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
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
    sources: list[str] = field(default_factory=list)  # where each setting came from

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


def _apply(settings: Settings, data: dict[str, Any], origin: str) -> None:
    for key, raw in data.items():
        key_n = key.replace("-", "_")
        try:
            if key_n in _SIMPLE_KEYS:
                conv = _SIMPLE_KEYS[key_n]
                value: Any = Path(str(raw)).expanduser() if conv is Path else conv(raw)
                setattr(settings, key_n, value)
            elif key_n in _VALUE_KEYS:
                setattr(settings.value, key_n, float(raw))
            elif key_n == "value" and isinstance(raw, dict):
                _apply(settings, raw, origin)
            else:
                raise ConfigError(
                    f"{origin}: unknown setting '{key}'",
                    hint="known settings: " + ", ".join(sorted([*_SIMPLE_KEYS, *_VALUE_KEYS])),
                )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: setting '{key}' has a bad value {raw!r}: {exc}") from exc


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


def load_settings(cwd: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    home = Path(env["LOOPMETER_HOME"]).expanduser() if env.get("LOOPMETER_HOME") else default_home()
    settings = Settings(home=home)
    settings.sources.append("defaults")

    home_file = home / "loopmeter.toml"
    if home_file.is_file():
        _apply(settings, _read_toml(home_file), str(home_file))
        settings.sources.append(str(home_file))

    pyproject = find_repo_pyproject((cwd or Path.cwd()).resolve())
    if pyproject is not None:
        section = _read_toml(pyproject).get("tool", {}).get("loopmeter")
        if isinstance(section, dict):
            _apply(settings, section, f"{pyproject} [tool.loopmeter]")
            settings.sources.append(f"{pyproject} [tool.loopmeter]")

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
