"""The Backend protocol, what a step gets and returns, and the registry.

Built-in backends register through the same entry-point group an outside plugin
uses (`loopmeter.backends` in pyproject.toml), so they are written exactly like a
third-party backend would be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loopmeter.errors import LoopmeterError
from loopmeter.records import UsageRow
from loopmeter.vocab import StepErrorKind, StopKind

if TYPE_CHECKING:
    from loopmeter.tasks import Task

ENTRY_POINT_GROUP = "loopmeter.backends"


@dataclass
class StepContext:
    """Everything one act step needs. The sandbox runner and model endpoint come in
    as values, so tests hand in real loopback servers rather than patching."""

    run_id: str
    attempt_id: str
    agent: str  # backend name, e.g. "claude-code"
    model: str | None  # e.g. "claude-sonnet-4-5-20250929", or None for the agent's default
    workdir: Path  # the attempt's git worktree
    instruction: str  # the task text
    iteration: int  # 1-based
    feedback: str | None = None  # the previous check's failure output, fed back
    task: Task | None = None  # set when the run came from a task directory (oracle needs it)
    sandbox: Any = None  # a sandbox runner (loopmeter.sandbox); None only in unit tests of parsers
    policy: Any = None  # the loaded policy in force
    timeout_s: float | None = None  # remaining wall-clock budget for this step
    max_usd: float | None = None  # remaining dollar budget for this step
    max_tokens: int | None = None  # remaining token budget for this step
    api_base: str | None = None  # OpenAI-compatible server for builtin, or the agent's base URL
    env: dict[str, str] = field(default_factory=dict)  # extra non-secret env for the agent
    cancel: threading.Event | None = None  # set when the run is cancelled / budget is spent
    on_usage: Callable[[UsageRow], None] | None = None  # called as each model call is known
    user: str | None = None
    project: str | None = None
    # asks a person (through the loop's approval interrupt) about a policy `ask`:
    # approve(action, target) -> True to go ahead. None: an `ask` is refused.
    approve: Callable[[str, str], bool] | None = None
    state_dir: Path | None = None  # private scratch for the backend (outside the worktree), kept across resume
    actor: str = ""  # the policy actor, "agent:<name>"
    tracer: Any = None  # an OpenTelemetry tracer; spans made with it nest under `invoke_agent`


@dataclass
class StepResult:
    """What one act step did. Usage rows are returned; only the store writes them."""

    exit_code: int = 0
    usage: list[UsageRow] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)  # messages / events, JSON-able
    summary: str = ""  # one paragraph for people: what the agent said it did
    error: str | None = None  # set when the agent itself failed (not the task's check)
    error_kind: StepErrorKind | None = None  # why the step failed or stopped
    stopped_by: str | None = None  # the limit the step stopped at: a code ("max_usd", "max_turns") or a reason
    stop_kind: StopKind | None = None  # that limit's kind where the backend knows it (else the code names it)
    session_id: str | None = None
    cost_usd: float | None = None  # the agent's own total where it reports one


@runtime_checkable
class Backend(Protocol):
    name: str
    #: human description for `loopmeter agents` / docs
    description: str

    def available(self, api_base: str | None = None) -> tuple[bool, str | None]:
        """(usable, hint): is the CLI installed / the key present? The hint says how to fix it.
        With `api_base` (a local or self-hosted model server) no provider key is required."""
        ...

    def step(self, ctx: StepContext) -> StepResult:
        """Do one act step in ctx.workdir (through ctx.sandbox) and report what happened."""
        ...


BackendFactory = Callable[[], Backend]

_registry: dict[str, BackendFactory] | None = None
_lock = threading.Lock()


def _load() -> dict[str, BackendFactory]:
    global _registry
    with _lock:
        if _registry is None:
            found: dict[str, BackendFactory] = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                found[ep.name] = _lazy(ep)
            _registry = found
        return _registry


def _lazy(ep: Any) -> BackendFactory:
    def factory() -> Backend:
        obj = ep.load()
        return obj() if callable(obj) else obj

    return factory


def register(name: str, factory: BackendFactory) -> None:
    """Register a backend by hand (the entry-point group is the usual way)."""
    _load()[name] = factory


def backend_names() -> list[str]:
    return sorted(_load())


def get_backend(name: str) -> Backend:
    registry = _load()
    if name not in registry:
        raise LoopmeterError(
            f"unknown agent '{name}'",
            hint="known agents: " + ", ".join(sorted(registry)) + " (use builtin:PROVIDER/MODEL for any model)",
        )
    return registry[name]()


def check_usable(name: str, model: str | None, api_base: str | None, label: str) -> None:
    """Fail before any work when agent `name` is unknown, not installed, or (builtin) has no key for
    `model`; exit 2 with a hint. `label` names the configuration in the no-key message."""
    from loopmeter.agents.builtin import missing_key_hint

    backend = get_backend(name)  # unknown agent: exit 2 with the known names
    ok, hint = backend.available(api_base)
    if not ok:
        raise LoopmeterError(f"agent {name} is not available", hint=hint)
    if name == "builtin":
        why = missing_key_hint(model, api_base)
        if why:
            raise LoopmeterError(f"cannot run {label}", hint=why)


def parse_agent_spec(spec: str) -> tuple[str, str | None]:
    """'claude-code' -> ('claude-code', None); 'builtin:openai/gpt-5' -> ('builtin', 'openai/gpt-5')."""
    name, _, model = spec.partition(":")
    return name.strip(), (model.strip() or None)
