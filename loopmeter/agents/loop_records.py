"""What the loop takes and gives: the run request, its results, and the graphs' states."""

from __future__ import annotations

import json
import operator
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from loopmeter.agents.budget import Budgets

if TYPE_CHECKING:
    from loopmeter.policies import Policy
    from loopmeter.tasks import Task

RECURSION_LIMIT = 1000
HARD_MAX_ITERS = 300  # 3 graph steps per iteration must stay under RECURSION_LIMIT
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id() -> str:
    """A ULID: 48-bit milliseconds + 80 random bits, Crockford base32 (sorts by time)."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


@dataclass
class AgentSpec:
    name: str
    model: str | None = None
    role: str = "primary"  # primary | shadow (never the winner, never applied)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.model}" if self.model else self.name


@dataclass
class RunRequest:
    instruction: str
    check: str
    repo: Path | None
    agents: list[AgentSpec]
    task: Task | None = None
    policy: str | Path | Policy = "default"  # a preset name, a file, or a policy loaded already
    budgets: Budgets = field(default_factory=Budgets)
    run_budgets: Budgets | None = None
    concurrency: int = 2
    kind: str = "loop"  # loop | eval | shadow
    run_id: str | None = None
    sandbox: str = "bwrap"
    api_base: str | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None
    eval_meta: dict[str, Any] | None = None
    # answers policy `ask`s in-process (a TTY prompt): list of questions -> {question id: approved}
    approver: Callable[[list[dict[str, Any]]], dict[str, bool]] | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra non-secret env for agents
    user: str | None = None
    project: str | None = None
    executor: str = "local"  # where attempts run: local (this process) or ray (loopmeter/executors/attempts.py)
    ray_address: str | None = None


@dataclass
class AttemptRecord:
    id: str
    agent: str
    model: str | None
    role: str
    status: str
    stop_reason: str | None
    iterations: int
    input_tokens: int | None  # None: the agent made calls but never reported this kind
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    unpriced_calls: int
    wall_s: float | None
    time_to_green_s: float | None
    time_to_signal_s: float | None
    iterations_to_green: int | None
    branch: str | None
    worktree: str | None
    head_commit: str | None
    diffstat: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    run_id: str
    status: str  # a RunStatus value
    attempts: list[AttemptRecord]
    winner: str | None
    approvals: list[dict[str, Any]] = field(default_factory=list)  # pending questions when waiting


# -- graph states -----------------------------------------------------------


class AttemptState(TypedDict, total=False):
    attempt_id: str
    iteration: int
    active_s: float
    feedback: str | None
    last_act: dict[str, Any]
    last_check: dict[str, Any]
    status: str
    stop_reason: str | None
    error_kind: str | None  # an ErrorKind when status is error
    time_to_signal_s: float | None
    time_to_green_s: float | None
    iterations_to_green: int | None
    spent_before: list[Any]  # [usd, tokens, unpriced calls] of the attempt before the last act


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {**a, **b}


class RunState(TypedDict, total=False):
    attempt_ids: list[str]
    results: Annotated[dict[str, Any], _merge]
    answers: dict[str, Any]
    rounds: Annotated[int, operator.add]
    winner: str | None


class _Cancelled(Exception):
    """The run was cancelled mid-step: the step is not recorded as finished, so resume redoes it."""


def attempt_record(a: Any) -> AttemptRecord:
    return AttemptRecord(
        id=a.id, agent=a.agent, model=a.model, role=a.role, status=a.status, stop_reason=a.stop_reason,
        iterations=a.iterations, input_tokens=a.input_tokens, output_tokens=a.output_tokens,
        cache_read_tokens=a.cache_read_tokens, cache_write_tokens=a.cache_write_tokens,
        reasoning_tokens=a.reasoning_tokens, cost_usd=a.cost_usd, unpriced_calls=a.unpriced_calls,
        wall_s=a.wall_s, time_to_green_s=a.time_to_green_s, time_to_signal_s=a.time_to_signal_s,
        iterations_to_green=a.iterations_to_green, branch=a.branch, worktree=a.worktree,
        head_commit=a.head_commit, diffstat=json.loads(a.diffstat) if a.diffstat else None,
    )
