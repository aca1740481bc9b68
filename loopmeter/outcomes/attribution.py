"""Which spend produced which pull request: the one place that ties usage to PRs.

Every PR gets one label:
- `session`: usage sessions in the PR's repository on its head branch (while the PR was
  open, or before it); their usage is the PR's cost;
- `loop`: a `Loopmeter-Run` trailer in its commits; the run's usage is the PR's cost;
- `trailer`: an agent named in its commits (co-author trailer, "Generated with Claude Code");
- `author`: its author is an agent's bot account;
- `none`: no agent seen.
With `trailer` and `author` the agent is known and the cost is not. Usage that no PR claims
is unattributed: shown beside, never dropped or spread over PRs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from loopmeter.outcomes import trailers

REVERT_WINDOW = timedelta(days=30)
LABELS = ("session", "loop", "trailer", "author", "none")


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass
class Spend:
    """Usage summed over a set of calls: the priced part, how many calls had no price, tokens."""

    cost_usd: float = 0.0
    priced_calls: int = 0
    unpriced_calls: int = 0
    tokens: int = 0
    calls: int = 0

    def add(self, other: Spend) -> None:
        self.cost_usd += other.cost_usd
        self.priced_calls += other.priced_calls
        self.unpriced_calls += other.unpriced_calls
        self.tokens += other.tokens
        self.calls += other.calls

    @property
    def cost(self) -> float | None:
        """The priced cost; None when every call was unpriced (never $0 for unknown)."""
        return self.cost_usd if self.priced_calls or not self.unpriced_calls else None


@dataclass
class UsageGroup:
    """The usage of one (source, session_id, run_id) with its agents, models and users."""

    source: str
    session_id: str | None
    run_id: str | None
    spend: Spend
    agents: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)


@dataclass
class PR:
    repo: str
    number: int
    title: str | None
    branch: str | None
    state: str
    author: str | None
    author_is_bot: bool
    created_at: datetime | None
    merged_at: datetime | None
    closed_at: datetime | None
    first_review_at: datetime | None
    changes_requested: int
    commits_after_review: int
    reverted_at: datetime | None
    reverted_by: str | None
    named_agents: list[str]  # from trailers and bot authors
    runs: list[str]
    agents: list[str] = field(default_factory=list)
    attribution: str = "none"
    spend: Spend = field(default_factory=Spend)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    models: set[str] = field(default_factory=set)

    @property
    def time_to_merge_s(self) -> float | None:
        if self.merged_at and self.created_at:
            return (self.merged_at - self.created_at).total_seconds()
        return None

    @property
    def time_to_first_review_s(self) -> float | None:
        if self.first_review_at and self.created_at:
            return max(0.0, (self.first_review_at - self.created_at).total_seconds())
        return None

    @property
    def reverted(self) -> bool:
        return self.reverted_at is not None

    @property
    def reverted_within_window(self) -> bool:
        return bool(self.merged_at and self.reverted_at and self.reverted_at - self.merged_at <= REVERT_WINDOW)

    @property
    def costed(self) -> bool:
        return self.attribution in ("session", "loop")

    def as_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo, "number": self.number, "title": self.title, "branch": self.branch,
            "state": self.state, "author": self.author, "agents": self.agents, "attribution": self.attribution,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "merged_at": self.merged_at.isoformat() if self.merged_at else None,
            "time_to_merge_s": self.time_to_merge_s, "review_rounds": self.changes_requested,
            "reverted": self.reverted,
            "cost_usd": round(self.spend.cost, 6) if self.costed and self.spend.cost is not None else None,
            "unpriced_calls": self.spend.unpriced_calls if self.costed else 0,
            "sessions": self.sessions,
        }


@dataclass
class Attribution:
    prs: list[PR]
    unattributed: Spend
    unattributed_sessions: int
    total: Spend


def _pr_where(P: Any, repo: str | None, since: datetime | None, until: datetime | None) -> list[Any]:
    """The PRs in view: in `repo`, created in [since, until) (stored as UTC); a PR known only
    from a clone's history (no creation time) by when it landed."""
    from sqlalchemy import func

    where = []
    created = func.coalesce(P.created_at, P.merged_at)
    if repo:
        where.append(P.repo == repo)
    if since:
        where.append(created >= since.astimezone(UTC))
    if until:
        where.append(created < until.astimezone(UTC))
    return where


def _load_prs(conn: Any, where: list[Any]) -> list[PR]:
    from sqlalchemy import select

    from loopmeter.store.models import PullRequest

    P: Any = PullRequest.__table__.c  # type: ignore[attr-defined]
    q = select(PullRequest.__table__).where(*where)  # type: ignore[attr-defined]
    out = []
    for r in conn.execute(q.order_by(P.repo, P.number)).mappings():
        named = sorted(set(json.loads(r["agents"] or "[]")))
        out.append(PR(
            repo=r["repo"], number=r["number"], title=r["title"], branch=r["branch"], state=r["state"],
            author=r["author"], author_is_bot=bool(r["author_is_bot"]), created_at=_utc(r["created_at"]),
            merged_at=_utc(r["merged_at"]), closed_at=_utc(r["closed_at"]), first_review_at=_utc(r["first_review_at"]),
            changes_requested=r["changes_requested"] or 0, commits_after_review=r["commits_after_review"] or 0,
            reverted_at=_utc(r["reverted_at"]), reverted_by=r["reverted_by"], named_agents=named,
            runs=json.loads(r["runs"] or "[]")))
    return out


def _on_pr_branch(where: list[Any]) -> Any:
    """SQL: the session (table `session`) worked on the head branch of a PR in view."""
    from sqlalchemy import exists

    from loopmeter.store.models import PullRequest, Session

    P: Any = PullRequest.__table__.c  # type: ignore[attr-defined]
    S: Any = Session.__table__.c  # type: ignore[attr-defined]
    return exists().where(P.repo == S.repo, P.branch == S.branch, *where)


def _load_sessions(conn: Any, where: list[Any]) -> list[Any]:
    """The sessions on a PR's head branch (the only ones a PR can claim)."""
    from sqlalchemy import select

    from loopmeter.store.models import Session

    S: Any = Session.__table__.c  # type: ignore[attr-defined]
    return list(conn.execute(select(S.source, S.session_id, S.agent, S.user, S.repo, S.branch, S.first_ts,
                                    S.last_ts).where(S.repo.is_not(None), S.branch.is_not(None),
                                                     _on_pr_branch(where))))


def _load_usage(conn: Any, where: list[Any], since: datetime | None, until: datetime | None,
                agent: str | None, user: str | None) -> tuple[list[UsageGroup], Spend, int]:
    """Usage summed in SQL: first per (source, session, run, agent, model, user) over the usage
    rows, then those sums joined to the sessions on a PR's head branch; only the sums a PR could
    claim (such a session, or a loop run) come back, everything else as one sum with its count of
    sessions. Returns (groups, the rest, sessions in the rest)."""
    from sqlalchemy import and_, case, func, literal, or_, select

    from loopmeter.store.models import Session, Usage

    U: Any = Usage.__table__.c  # type: ignore[attr-defined]
    S: Any = Session.__table__.c  # type: ignore[attr-defined]
    tokens = (func.coalesce(U.input_tokens, 0) + func.coalesce(U.cache_read_tokens, 0)
              + func.coalesce(U.cache_write_tokens, 0) + func.coalesce(U.output_tokens, 0))
    dims = (U.source, U.session_id, U.run_id, U.agent, U.model, U.user)
    per_call = select(*dims, func.sum(U.cost_usd).label("cost"),
                      func.sum(case((U.cost_usd.is_not(None), 1), else_=0)).label("priced"),
                      func.sum(case((U.cost_usd.is_(None), 1), else_=0)).label("unpriced"),
                      func.sum(tokens).label("tokens"), func.count().label("calls")).group_by(*dims)
    if since:
        per_call = per_call.where(U.ts >= since.astimezone(UTC))
    if until:
        per_call = per_call.where(U.ts < until.astimezone(UTC))
    if agent:
        per_call = per_call.where(U.agent == agent)
    if user:
        per_call = per_call.where(U.user == user)
    sums = per_call.subquery("sums")
    G: Any = sums.c
    matched = select(S.source, S.session_id).where(S.repo.is_not(None), S.branch.is_not(None),
                                                     _on_pr_branch(where)).subquery("matched")
    M: Any = matched.c
    claimable = or_(M.session_id.is_not(None), G.run_id.is_not(None))

    def kept(column: Any, name: str) -> Any:
        return case((claimable, column), else_=None).label(name)

    keys = [kept(G.source, "source"), kept(G.session_id, "session_id"), kept(G.run_id, "run_id"),
            kept(G.agent, "agent"), kept(G.model, "model"), kept(G.user, "user")]
    session_key = G.source + literal("|") + func.coalesce(G.session_id, G.run_id, literal(""))
    q = select(*keys, func.sum(G.cost), func.sum(G.priced), func.sum(G.unpriced), func.sum(G.tokens),
               func.sum(G.calls), func.count(func.distinct(session_key))) \
        .select_from(sums.outerjoin(matched, and_(M.source == G.source, M.session_id == G.session_id))) \
        .group_by(*keys)
    groups: dict[tuple[str, str | None, str | None], UsageGroup] = {}
    rest, rest_sessions = Spend(), 0
    for source, sid, run, agent_, model, user_, cost, priced, unpriced, toks, calls, sessions in conn.execute(q):
        spend = Spend(float(cost or 0.0), int(priced or 0), int(unpriced or 0), int(toks or 0), int(calls))
        if source is None:  # the calls no PR can claim
            rest.add(spend)
            rest_sessions += int(sessions or 0)
            continue
        g = groups.setdefault((source, sid, run), UsageGroup(source, sid, run, Spend()))
        g.spend.add(spend)
        for bucket, value in ((g.agents, agent_), (g.models, model), (g.users, user_)):
            if value:
                bucket.add(value)
    return list(groups.values()), rest, rest_sessions


def _end(pr: PR) -> datetime | None:
    return pr.merged_at or pr.closed_at


def match_sessions(prs: list[PR], sessions: list[Any]) -> dict[tuple[str, str], PR]:
    """(source, session_id) -> the PR it worked for: same repository and head branch; when
    several PRs used the branch, the first one still open when the session began."""
    by_branch: dict[tuple[str, str], list[PR]] = defaultdict(list)
    for pr in prs:
        if pr.branch:
            by_branch[(pr.repo, pr.branch)].append(pr)
    for group in by_branch.values():
        group.sort(key=lambda p: p.created_at or datetime.min.replace(tzinfo=UTC))
    out: dict[tuple[str, str], PR] = {}
    for s in sessions:
        candidates = by_branch.get((s.repo, s.branch))
        if not candidates:
            continue
        start = _utc(s.first_ts)
        chosen = next((p for p in candidates if start is None or _end(p) is None or start <= _end(p)), None)  # type: ignore[operator]
        if chosen is not None:
            out[(s.source, s.session_id)] = chosen
    return out


def attribute(store: Any, *, repo: str | None = None, since: datetime | None = None,
              until: datetime | None = None, agent: str | None = None, user: str | None = None) -> Attribution:
    """THE cost of a PR: every PR (in `repo`, created in [since, until)) with its label, agents,
    sessions and cost, and the spend no PR claims. `outcomes prs --json`, `outcomes`, the report,
    the dashboard's Outcomes tab and the Overview all read it.

    Usage is summed in SQL (the calls in [since, until), of `agent` and `user` when given);
    only the sums per session that a PR could claim come back. With `agent`, only PRs that
    agent worked on; with `user`, only PRs that user's calls went into or that they authored."""
    from loopmeter.store.models import PullRequest

    where = _pr_where(PullRequest.__table__.c, repo, since, until)  # type: ignore[attr-defined]
    with store.engine.connect() as conn:
        prs = _load_prs(conn, where)
        usage, rest, rest_sessions = _load_usage(conn, where, since, until, agent, user)
        sessions = _load_sessions(conn, where)
    session_info = {(s.source, s.session_id): s for s in sessions}
    by_session = match_sessions(prs, sessions)
    by_run: dict[str, PR] = {}
    for p in prs:
        for run in p.runs:
            by_run.setdefault(run, p)
    unattributed, total = Spend(), Spend()
    loose_sessions: set[tuple[str, str | None]] = set()
    per_pr_session: dict[tuple[int, str, str], dict[str, Any]] = {}
    via: dict[int, set[str]] = defaultdict(set)
    for g in usage:
        total.add(g.spend)
        pr = by_session.get((g.source, g.session_id)) if g.session_id else None
        how = "session"
        if pr is None and g.run_id:
            pr, how = by_run.get(g.run_id), "loop"
        if pr is None:
            unattributed.add(g.spend)
            loose_sessions.add((g.source, g.session_id or g.run_id))
            continue
        via[id(pr)].add(how)
        pr.spend.add(g.spend)
        pr.models |= g.models
        info = session_info.get((g.source, g.session_id or ""))
        agents = g.agents | ({info.agent} if info is not None and info.agent else set())
        pr.agents = sorted(set(pr.agents) | agents)
        key = (id(pr), g.source, g.session_id or g.run_id or "")
        row = per_pr_session.get(key)
        if row is None:
            row = {"source": g.source, "session_id": g.session_id, "run_id": g.run_id,
                   "agent": sorted(agents)[0] if agents else None, "branch": info.branch if info else None,
                   "cost_usd": 0.0, "unpriced_calls": 0, "calls": 0, "tokens": 0, "_priced": 0}
            per_pr_session[key] = row
            pr.sessions.append(row)
        row["cost_usd"] += g.spend.cost_usd
        row["unpriced_calls"] += g.spend.unpriced_calls
        row["calls"] += g.spend.calls
        row["tokens"] += g.spend.tokens
        row["_priced"] += g.spend.priced_calls
    for pr in prs:
        for row in pr.sessions:
            if not row.pop("_priced") and row["unpriced_calls"]:
                row["cost_usd"] = None
            elif row["cost_usd"] is not None:
                row["cost_usd"] = round(row["cost_usd"], 6)
        bot = trailers.bot_agent(pr.author)
        pr.agents = sorted(set(pr.agents) | set(pr.named_agents))
        if "session" in via[id(pr)]:
            pr.attribution = "session"
        elif "loop" in via[id(pr)]:
            pr.attribution = "loop"
        elif set(pr.named_agents) - ({bot} if bot else set()):
            pr.attribution = "trailer"
        elif bot:
            pr.attribution = "author"
        else:
            pr.attribution = "none"
    unattributed.add(rest)
    total.add(rest)
    if agent:
        prs = [p for p in prs if agent in p.agents]
    if user:
        prs = [p for p in prs if p.spend.calls or p.author == user]
    return Attribution(prs, unattributed, len(loose_sessions) + rest_sessions, total)
