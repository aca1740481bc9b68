"""The store's tables. Times are aware UTC datetimes (SQLModel stores them as UTC on SQLite and PostgreSQL).

Adding a column: add it here AND append a migration in `migrations.py` that adds
it to an existing database (fresh databases get it from these models).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from loopmeter.vocab import AttemptStatus, CostSource, RunStatus


class Usage(SQLModel, table=True):
    """One model call, whatever its origin (loop, agent log, OTLP, agent JSON)."""

    __tablename__ = "usage"
    __table_args__ = (
        # every index costs each of the ~150k rows a GB of logs brings; (source, ts), model,
        # session and request id had one until schema 3: queries by source also bound ts,
        # and none looked a row up by the others
        Index("ix_usage_ts", "ts"),
        # partial: only loop calls carry a run id, so log rows cost this index nothing
        Index("ix_usage_run", "run_id", "attempt_id", sqlite_where=text("run_id IS NOT NULL"),
              postgresql_where=text("run_id IS NOT NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column_kwargs={"unique": True}, max_length=512)
    source: str = Field(max_length=64)
    agent: str | None = Field(default=None, max_length=128)
    provider: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=256)
    ts: datetime
    session_id: str | None = Field(default=None, max_length=256)
    project: str | None = Field(default=None, sa_column=Column(Text))
    user: str | None = Field(default=None, max_length=128)
    input_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cache_read_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cache_write_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cache_write_1h_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    output_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    reasoning_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cost_usd: float | None = None
    cost_source: str = Field(default=CostSource.UNPRICED, max_length=16)
    latency_ms: float | None = None
    request_id: str | None = Field(default=None, max_length=256)
    run_id: str | None = Field(default=None, max_length=32)
    attempt_id: str | None = Field(default=None, max_length=64)
    # added in schema 2: which price table computed a `calculated` cost
    price_table_sha256: str | None = Field(default=None, max_length=64)


class UsageHour(SQLModel, table=True):
    """Usage summed per UTC hour and dimensions, kept up to date by `Store.add_usage` in the
    same transaction as the rows it sums (schema 3). Unknown dimensions are stored as ''.

    The dashboard and reports read spend and tokens from here: a million usage rows
    become a few tens of thousands of hourly sums, read in well under a second.
    """

    __tablename__ = "usage_hour"

    hour: str = Field(primary_key=True, max_length=13)  # 'YYYY-MM-DD HH' in UTC
    agent: str = Field(default="", primary_key=True, max_length=128)
    model: str = Field(default="", primary_key=True, max_length=256)
    provider: str = Field(default="", primary_key=True, max_length=64)
    source: str = Field(default="", primary_key=True, max_length=64)
    project: str = Field(default="", sa_column=Column(Text, primary_key=True, default=""))
    user: str = Field(default="", primary_key=True, max_length=128)
    cost_source: str = Field(default="", primary_key=True, max_length=16)
    calls: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    unpriced: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    cost: float = 0.0  # priced calls only; `unpriced` counts the rest
    input: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    cache_read: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    cache_write: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    output: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    reasoning: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class Run(SQLModel, table=True):
    """One `loopmeter run` or eval run: a task given to one or more agents."""

    __tablename__ = "run"
    __table_args__ = (Index("ix_run_started", "started_at"), Index("ix_run_kind", "kind"))

    id: str = Field(primary_key=True, max_length=32)  # ULID
    kind: str = Field(default="loop", max_length=16)  # loop, eval, shadow
    task: str = Field(default="", sa_column=Column(Text))
    task_id: str | None = Field(default=None, max_length=256)
    suite: str | None = Field(default=None, max_length=256)
    repo: str | None = Field(default=None, sa_column=Column(Text))
    base_commit: str | None = Field(default=None, max_length=64)
    user: str | None = Field(default=None, max_length=128)
    policy: str | None = Field(default=None, max_length=256)
    policy_sha256: str | None = Field(default=None, max_length=64)
    status: str = Field(default=RunStatus.RUNNING, max_length=16)  # a RunStatus
    winner_attempt_id: str | None = Field(default=None, max_length=64)
    config: str | None = Field(default=None, sa_column=Column(Text))  # JSON: agents, budgets, check
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # seconds the run has been driven (by `run` or `resume`), downtime between them left out:
    # what a run's wall-time budget counts. None for runs recorded before schema 4.
    active_s: float | None = None


class Attempt(SQLModel, table=True):
    """One agent on one task in its own worktree and sandbox: one experiment."""

    __tablename__ = "attempt"
    __table_args__ = (
        Index("ix_attempt_run", "run_id"),
        Index("ix_attempt_started", "started_at"),
        Index("ix_attempt_agent", "agent", "model"),
    )

    id: str = Field(primary_key=True, max_length=64)
    run_id: str = Field(max_length=32)
    agent: str = Field(max_length=128)
    model: str | None = Field(default=None, max_length=256)
    role: str = Field(default="primary", max_length=16)  # primary, shadow
    task_id: str | None = Field(default=None, max_length=256)
    epoch: int | None = None
    user: str | None = Field(default=None, max_length=128)
    project: str | None = Field(default=None, sa_column=Column(Text))
    worktree: str | None = Field(default=None, sa_column=Column(Text))
    branch: str | None = Field(default=None, max_length=256)
    base_commit: str | None = Field(default=None, max_length=64)
    head_commit: str | None = Field(default=None, max_length=64)
    status: str = Field(default=AttemptStatus.PENDING, max_length=16)  # an AttemptStatus
    stop_reason: str | None = Field(default=None, sa_column=Column(Text))  # for people; never parsed
    error_kind: str | None = Field(default=None, max_length=32)  # an ErrorKind when status is error
    iterations: int = 0
    wall_s: float | None = None
    time_to_signal_s: float | None = None
    time_to_green_s: float | None = None
    iterations_to_green: int | None = None
    diffstat: str | None = Field(default=None, sa_column=Column(Text))  # JSON {files, insertions, deletions}
    input_tokens: int = Field(default=0, sa_column=Column(BigInteger, default=0))
    cache_read_tokens: int = Field(default=0, sa_column=Column(BigInteger, default=0))
    cache_write_tokens: int = Field(default=0, sa_column=Column(BigInteger, default=0))
    output_tokens: int = Field(default=0, sa_column=Column(BigInteger, default=0))
    reasoning_tokens: int = Field(default=0, sa_column=Column(BigInteger, default=0))
    cost_usd: float | None = None
    unpriced_calls: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    applied_at: datetime | None = None


class Iteration(SQLModel, table=True):
    """One act -> verify pass inside an attempt."""

    __tablename__ = "iteration"
    __table_args__ = (UniqueConstraint("attempt_id", "n", name="uq_iteration_attempt_n"),)

    id: int | None = Field(default=None, primary_key=True)
    attempt_id: str = Field(max_length=64)
    n: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    act_exit: int | None = None
    act_summary: str | None = Field(default=None, sa_column=Column(Text))
    check_exit: int | None = None
    check_passed: bool | None = None
    check_output_tail: str | None = Field(default=None, sa_column=Column(Text))
    cost_usd: float | None = None
    tokens: int | None = None


class Span(SQLModel, table=True):
    """One OpenTelemetry span (ours, or received from an agent's OTLP export)."""

    __tablename__ = "span"
    __table_args__ = (
        UniqueConstraint("trace_id", "span_id", name="uq_span_ids"),
        Index("ix_span_run", "run_id"),
        Index("ix_span_start", "start_ns"),
    )

    id: int | None = Field(default=None, primary_key=True)
    trace_id: str = Field(max_length=32)
    span_id: str = Field(max_length=16)
    parent_span_id: str | None = Field(default=None, max_length=16)
    name: str = Field(max_length=512)
    kind: str | None = Field(default=None, max_length=16)
    start_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    end_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str | None = Field(default=None, max_length=16)
    attributes: str | None = Field(default=None, sa_column=Column(Text))  # JSON
    service: str | None = Field(default=None, max_length=128)
    run_id: str | None = Field(default=None, max_length=32)
    attempt_id: str | None = Field(default=None, max_length=64)


class Audit(SQLModel, table=True):
    """One sandbox or policy decision, hash-chained to the one before it."""

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_run", "run_id"),
        Index("ix_audit_decision", "decision"),
        Index("ix_audit_ts", "ts"),
    )

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    ts: datetime
    sandbox_id: str | None = Field(default=None, max_length=64)
    run_id: str | None = Field(default=None, max_length=32)
    attempt_id: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=128)  # agent:<name>, check, user, loopmeter
    layer: str = Field(max_length=16)  # policy, proxy, kernel, limit
    action: str = Field(max_length=32)  # exec, read, write, connect, env, approve, ...
    target: str | None = Field(default=None, sa_column=Column(Text))
    decision: str = Field(max_length=8)  # allow, deny, ask
    rule_id: str | None = Field(default=None, max_length=128)
    policy_sha256: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, sa_column=Column(Text))  # JSON
    prev: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class EvalResult(SQLModel, table=True):
    """One (configuration, task, epoch) of an eval run."""

    __tablename__ = "eval_result"
    __table_args__ = (
        UniqueConstraint("run_id", "config", "task_id", "epoch", name="uq_eval_cell"),
        Index("ix_eval_run", "run_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=32)
    suite: str | None = Field(default=None, max_length=256)
    config: str = Field(max_length=256)  # "agent" or "agent:model"
    agent: str = Field(max_length=128)
    model: str | None = Field(default=None, max_length=256)
    task_id: str = Field(max_length=256)
    epoch: int = 0
    attempt_id: str | None = Field(default=None, max_length=64)
    passed: bool | None = None
    score: float | None = None
    wall_s: float | None = None
    latency_ms: float | None = None
    input_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cache_read_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cache_write_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    output_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    reasoning_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cost_usd: float | None = None
    error_kind: str | None = Field(default=None, max_length=64)  # an ErrorKind; errors are counted apart
    detail: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime | None = None


class IngestCursor(SQLModel, table=True):
    """How far one source file has been read, so re-ingest reads only new bytes."""

    __tablename__ = "ingest_cursor"

    path: str = Field(primary_key=True, max_length=2048)
    source: str = Field(max_length=64)
    inode: int | None = Field(default=None, sa_column=Column(BigInteger))
    size: int = Field(default=0, sa_column=Column(BigInteger, default=0))
    offset: int = Field(default=0, sa_column=Column(BigInteger, default=0))
    mtime: float | None = None
    malformed_lines: int = 0
    state: str | None = Field(default=None, sa_column=Column(Text))  # JSON: per-source carry-over
    updated_at: datetime | None = None


class Outcome(SQLModel, table=True):
    """One verified result reaching git: a commit carrying a `Loopmeter-Run:` trailer."""

    __tablename__ = "outcome"
    __table_args__ = (Index("ix_outcome_run", "run_id"),)

    sha: str = Field(primary_key=True, max_length=64)
    run_id: str | None = Field(default=None, max_length=32)
    attempt_id: str | None = Field(default=None, max_length=64)
    repo: str | None = Field(default=None, sa_column=Column(Text))
    branch: str | None = Field(default=None, max_length=256)
    committed_at: datetime | None = None
    merged_at: datetime | None = None


class Session(SQLModel, table=True):
    """Where one agent session worked, stored once per session (not per usage row): its
    working directory, branch and commit, resolved to a repository identity (the normalised
    remote URL when known, else the git top-level path). Usage rows join on
    (source, session_id). Filled by ingest (agent logs, OTLP) and by loop runs (schema 5)."""

    __tablename__ = "session"
    __table_args__ = (Index("ix_session_repo_branch", "repo", "branch"),)

    source: str = Field(primary_key=True, max_length=64)  # the usage rows' `source`
    session_id: str = Field(primary_key=True, max_length=256)
    agent: str | None = Field(default=None, max_length=128)
    user: str | None = Field(default=None, max_length=128)
    cwd: str | None = Field(default=None, sa_column=Column(Text))
    branch: str | None = Field(default=None, max_length=256)
    commit: str | None = Field(default=None, max_length=64)
    repo: str | None = Field(default=None, sa_column=Column(Text))  # identity: see loopmeter.outcomes
    repo_url: str | None = Field(default=None, sa_column=Column(Text))
    first_ts: datetime | None = None
    last_ts: datetime | None = None


class PullRequest(SQLModel, table=True):
    """One pull request (or merge request) on a code host, or a branch landed on the default
    branch seen in local git, with what tied it to an agent (schema 6)."""

    __tablename__ = "pull_request"
    __table_args__ = (Index("ix_pull_request_branch", "repo", "branch"),)

    repo: str = Field(primary_key=True, max_length=512)  # repository identity
    number: int = Field(primary_key=True)
    host: str = Field(default="github", max_length=32)  # github | gitlab | git
    title: str | None = Field(default=None, sa_column=Column(Text))
    branch: str | None = Field(default=None, max_length=256)
    base: str | None = Field(default=None, max_length=256)
    state: str = Field(default="open", max_length=16)  # open | merged | closed
    author: str | None = Field(default=None, max_length=256)
    author_is_bot: bool = False
    created_at: datetime | None = None
    merged_at: datetime | None = None
    closed_at: datetime | None = None
    merge_sha: str | None = Field(default=None, max_length=64)
    first_review_at: datetime | None = None
    changes_requested: int = 0
    commits_after_review: int = 0
    agents: str | None = Field(default=None, sa_column=Column(Text))  # JSON list of agent names
    runs: str | None = Field(default=None, sa_column=Column(Text))  # JSON list of Loopmeter-Run ids
    reverted_at: datetime | None = None
    reverted_by: str | None = Field(default=None, max_length=128)  # the revert's PR number or sha
    updated_at: datetime | None = None
    reverts: int | None = None  # the PR number this PR reverts ("Reverts owner/repo#N")
    shas: str | None = Field(default=None, sa_column=Column(Text))  # JSON list of the PR's commit shas


class RepoCommit(SQLModel, table=True):
    """A commit on a repository's default branch: when it landed there, the agents its
    trailers name, and the commit it reverts (schema 6)."""

    __tablename__ = "repo_commit"

    repo: str = Field(primary_key=True, max_length=512)
    sha: str = Field(primary_key=True, max_length=64)
    landed_at: datetime | None = None
    authored_at: datetime | None = None
    author: str | None = Field(default=None, max_length=256)
    agents: str | None = Field(default=None, sa_column=Column(Text))  # JSON list
    run_id: str | None = Field(default=None, max_length=32)
    reverts: str | None = Field(default=None, max_length=64)
    pr_number: int | None = None


class SyncCursor(SQLModel, table=True):
    """How far a code host or vendor API has been read, per (source, scope): incremental
    sync, last error and when (schema 6)."""

    __tablename__ = "sync_cursor"

    source: str = Field(primary_key=True, max_length=64)  # e.g. github, git, anthropic-admin
    scope: str = Field(primary_key=True, max_length=512)  # a repository, an organisation, a report
    cursor: str | None = Field(default=None, sa_column=Column(Text))  # JSON
    synced_at: datetime | None = None
    rows: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_error_at: datetime | None = None


class VendorUsage(SQLModel, table=True):
    """One figure from a vendor's admin API: a day (or event) of usage or charges for a
    user and model, with its provenance tier (`billed` or `vendor`). `key` makes a re-sync
    replace, never add (schema 7)."""

    __tablename__ = "vendor_usage"
    __table_args__ = (Index("ix_vendor_usage_date", "date", "vendor"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column_kwargs={"unique": True}, max_length=512)
    vendor: str = Field(max_length=32)  # anthropic | openai | cursor | windsurf | copilot
    report: str = Field(max_length=64)  # which endpoint it came from
    date: str = Field(max_length=10)  # YYYY-MM-DD, UTC, as the vendor buckets it
    ts: datetime | None = None  # for per-event rows
    tier: str = Field(max_length=16)  # billed | vendor
    vendor_user: str | None = Field(default=None, max_length=256)  # email, key name, id
    user: str | None = Field(default=None, max_length=128)  # mapped loopmeter user
    model: str | None = Field(default=None, max_length=256)
    cost_usd: float | None = None
    credits: float | None = None
    input_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    output_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cache_read_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    cache_write_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    requests: int | None = Field(default=None, sa_column=Column(BigInteger))
    extra: str | None = Field(default=None, sa_column=Column(Text))  # JSON: what else the vendor said


class Meta(SQLModel, table=True):
    """Applied migrations (name -> time)."""

    __tablename__ = "loopmeter_migrations"

    name: str = Field(primary_key=True, max_length=128)
    applied_at: datetime


ALL_TABLES = [
    Usage, UsageHour, Run, Attempt, Iteration, Span, Audit, EvalResult, IngestCursor, Outcome,
    Session, PullRequest, RepoCommit, SyncCursor, VendorUsage, Meta,
]
