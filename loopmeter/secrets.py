"""Provider API keys: from the OS keyring (`loopmeter auth set`) or the environment.

A secret is never printed, logged or written to the store. Callers get the value
only to hand it to the one agent process whose policy names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

SERVICE = "loopmeter"

# provider -> the environment variable its agents and SDKs read
PROVIDERS: dict[str, str] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "cursor": "CURSOR_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "together": "TOGETHER_API_KEY",
}

# vendor admin/analytics keys (loopmeter/vendors/): read by `loopmeter vendors sync` on the host only,
# never handed to a sandbox (loopmeter/sandbox/runner.py refuses them whatever a policy says)
VENDOR_KEYS: dict[str, str] = {
    "anthropic-admin": "ANTHROPIC_ADMIN_API_KEY",
    "openai-admin": "OPENAI_ADMIN_KEY",
    "cursor-admin": "CURSOR_ADMIN_API_KEY",
    "windsurf": "WINDSURF_SERVICE_KEY",
    "github": "GITHUB_TOKEN",
}
# admin keys no sandbox ever gets, whatever a policy says (GITHUB_TOKEN is also an ordinary token
# a policy may hand to an agent on purpose)
NEVER_IN_SANDBOX = tuple(var for name, var in VENDOR_KEYS.items() if name != "github")


@dataclass
class KeyStatus:
    provider: str
    env_var: str
    present: bool
    where: str  # keyring, env, none


def env_var(provider: str) -> str:
    from loopmeter.errors import LoopmeterError

    name = provider.lower()
    if name in PROVIDERS:
        return PROVIDERS[name]
    if name in VENDOR_KEYS:
        return VENDOR_KEYS[name]
    raise LoopmeterError(
        f"unknown provider '{provider}'", hint="known providers: " + ", ".join(sorted([*PROVIDERS, *VENDOR_KEYS]))
    )


def keyring_usable() -> tuple[bool, str]:
    """Whether a real keyring backend exists (headless Linux often has none)."""
    try:
        import keyring
        from keyring.backends import fail
    except Exception as exc:  # pragma: no cover - keyring is a dependency
        return False, f"keyring not importable: {exc}"
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        return False, "no keyring backend is available on this machine"
    try:
        priority = float(getattr(backend, "priority", 1))
    except Exception:
        priority = 1.0
    if priority <= 0:
        return False, f"keyring backend {type(backend).__name__} is not usable here"
    return True, type(backend).__name__


def _from_keyring(provider: str) -> str | None:
    ok, _ = keyring_usable()
    if not ok:
        return None
    import keyring

    try:
        return keyring.get_password(SERVICE, provider)
    except Exception:
        return None


def get_key(provider: str, env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(value, where): the environment wins over the keyring, so CI can override."""
    environ: Mapping[str, str] = os.environ if env is None else env
    var = env_var(provider)
    if environ.get(var):
        return environ[var], "env"
    value = _from_keyring(provider)
    if value:
        return value, "keyring"
    return None, "none"


def status(env: Mapping[str, str] | None = None, use_keyring: bool = True) -> list[KeyStatus]:
    environ: Mapping[str, str] = os.environ if env is None else env
    out = []
    for provider, var in [*PROVIDERS.items(), *VENDOR_KEYS.items()]:
        if environ.get(var):
            out.append(KeyStatus(provider, var, True, "env"))
        elif use_keyring and _from_keyring(provider):
            out.append(KeyStatus(provider, var, True, "keyring"))
        else:
            out.append(KeyStatus(provider, var, False, "none"))
    return out
