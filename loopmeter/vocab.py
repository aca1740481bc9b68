"""The words loopmeter records: run and attempt status, why an attempt or an agent step stopped
or erred, where a cost came from.

Each is a `StrEnum` whose values are the strings the store and `--json` output have always
held, so a member compares equal to the stored text and serialises as it.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A `loopmeter run` or `eval run` as a whole."""

    RUNNING = "running"
    WAITING = "waiting"  # an attempt asked a question a person has not answered yet
    PASSED = "passed"  # a primary attempt passed: the run has a winner
    FAILED = "failed"
    CANCELLED = "cancelled"
    ERROR = "error"  # the run could not start (e.g. the sandbox)
    COMPLETED = "completed"  # an eval run that ran all its cells
    BUDGET = "budget"  # an eval run whose USD budget ran out before all its cells ran


class AttemptStatus(StrEnum):
    """One agent on one task in its own worktree and sandbox (docs/concepts.md)."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    PASSED = "passed"
    FAILED = "failed"  # the check never passed within the iterations allowed
    BUDGET = "budget"  # a USD or token budget ran out, or the agent stopped at a limit of its own
    TIMEOUT = "timeout"  # the wall-time budget ran out
    ERROR = "error"  # the agent or the infrastructure failed
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (AttemptStatus.PENDING, AttemptStatus.RUNNING, AttemptStatus.WAITING)


class StopKind(StrEnum):
    """Which limit stopped an attempt."""

    ITERATIONS = "iterations"
    USD = "usd"
    TOKENS = "tokens"
    WALL_TIME = "wall_time"
    AGENT_LIMIT = "agent_limit"  # the agent or its process hit a limit of its own (turns, memory, output...)

    @property
    def status(self) -> AttemptStatus:
        """The status an attempt stopped this way ends with."""
        if self is StopKind.ITERATIONS:
            return AttemptStatus.FAILED
        if self is StopKind.WALL_TIME:
            return AttemptStatus.TIMEOUT
        return AttemptStatus.BUDGET


class ErrorKind(StrEnum):
    """What went wrong in an attempt that ended `error`, or an eval cell that counts as an error.

    Kept on the attempt (`Attempt.error_kind`) and the eval result row beside the human stop
    reason, which is never read back for it. An older attempt with status error and no kind is
    read as INFRA (`of_attempt`)."""

    INFRA = "infra"  # the machinery failed: git, the store, the sandbox, a connection, a worker
    AUTH = "auth"  # the agent or the model API refused its key, or there was none
    NOT_INSTALLED = "not_installed"  # the agent's CLI is not on this node's PATH
    TIMEOUT = "timeout"  # a model call ran out of time (model tasks)
    MODEL = "model"  # the model API refused or failed the call in any other way (model tasks)
    CANCELLED = "cancelled"  # stopped by Ctrl-C or a cancel before it finished

    @classmethod
    def of_attempt(cls, status: str, kind: str | None) -> ErrorKind | None:
        """The error kind of an attempt as stored: None unless it ended error or cancelled."""
        if status == AttemptStatus.ERROR:
            known = {k.value: k for k in cls}
            return known.get(kind or "", cls.INFRA)  # NULL: written before the kind was kept
        if status == AttemptStatus.CANCELLED:
            return cls.CANCELLED
        return None


class StepErrorKind(StrEnum):
    """Why one act step of an agent did not end normally (`StepResult.error_kind`).

    Never stored on a row: the attempt's checkpointed graph state keeps it as its string. Three
    kinds end the attempt with status error (`attempt_error`); an AGENT failure is tried again
    with the check's feedback; a step stopped at a limit (BUDGET, TIMEOUT, CANCELLED) also names
    the limit in `StepResult.stopped_by`, and the attempt's status comes from that stop's
    `StopKind` (loopmeter/agents/budget.py), not from this kind."""

    INFRA = "infra"  # the machinery failed: the sandbox refused or could not reach the endpoint, the store
    AUTH = "auth"  # the agent or its model API refused its key, or it had none
    NOT_INSTALLED = "not_installed"  # the agent's CLI is not on this node's PATH
    AGENT = "agent"  # the agent itself failed: it crashed, exited non-zero, or its model call failed
    BUDGET = "budget"  # stopped at a limit: a budget loopmeter set or one of the agent's own
    TIMEOUT = "timeout"  # the step's (or its model call's) wall time ran out
    CANCELLED = "cancelled"  # stopped by a cancel before it finished

    @property
    def attempt_error(self) -> ErrorKind | None:
        """The error an attempt ends with after a step that failed this way; None: not an error."""
        ending = {StepErrorKind.INFRA: ErrorKind.INFRA, StepErrorKind.AUTH: ErrorKind.AUTH,
                  StepErrorKind.NOT_INSTALLED: ErrorKind.NOT_INSTALLED}
        return ending.get(self)


class CostSource(StrEnum):
    """Where a usage row's cost came from."""

    REPORTED = "reported"  # the agent or the API said so
    CALCULATED = "calculated"  # tokens x the price table (its sha256 is kept on the row)
    UNPRICED = "unpriced"  # no known price: cost_usd is NULL, never $0


class Tier(StrEnum):
    """Where a spend figure comes from, best first: a vendor's charge, the vendor's own usage or
    estimate, what an agent said, tokens times the price table. The same calls seen at two tiers
    are never summed: loopmeter/analytics/tiers.py takes the best tier per day and vendor."""

    BILLED = "billed"
    VENDOR = "vendor"
    REPORTED = "reported"  # = CostSource.REPORTED
    CALCULATED = "calculated"  # = CostSource.CALCULATED

    @property
    def rank(self) -> int:
        """0 for billed, the best; higher is weaker."""
        return list(Tier).index(self)
