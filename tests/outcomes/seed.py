"""PRs, sessions and usage for attribution tests and the dashboard's Outcomes tab."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from loopmeter.records import UsageRow
from loopmeter.store.models import PullRequest, Session
from loopmeter.vocab import CostSource

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
REPO = "github.com/o/r"


def usage(key: str, source: str, session: str | None, cost: float | None, *, run: str | None = None,
          agent: str = "claude-code", model: str = "claude-sonnet-4-5", tokens: int = 1000) -> UsageRow:
    return UsageRow(key=key, source=source, ts=T0, session_id=session, agent=agent, model=model,
                    input_tokens=tokens, output_tokens=0, cost_usd=cost, run_id=run,
                    cost_source=CostSource.CALCULATED if cost is not None else CostSource.UNPRICED)


def pr(number: int, branch: str, state: str, *, agents: list[str] = (), runs: list[str] = (),  # type: ignore[assignment]
       author: str = "alice", bot: bool = False, reverted: bool = False, hours: float = 5.0) -> PullRequest:
    created = T0 - timedelta(hours=1)
    end = created + timedelta(hours=hours)
    return PullRequest(repo=REPO, number=number, branch=branch, state=state, author=author, author_is_bot=bot,
                       created_at=created, merged_at=end if state == "merged" else None,
                       closed_at=end if state != "open" else None, agents=json.dumps(list(agents)),
                       runs=json.dumps(list(runs)), first_review_at=created + timedelta(hours=1),
                       changes_requested=1 if number == 1 else 0,
                       reverted_at=end + timedelta(days=2) if reverted else None)


def seed_prs(store):
    store.save(
        Session(source="claude-code", session_id="s1", agent="claude-code", repo=REPO, branch="feat-a", first_ts=T0),
        Session(source="claude-code", session_id="s2", agent="claude-code", repo=REPO, branch="feat-a", first_ts=T0),
        Session(source="codex", session_id="c1", agent="codex", repo=REPO, branch="feat-b", first_ts=T0),
        Session(source="codex", session_id="c2", agent="codex", repo=REPO, branch="nowhere", first_ts=T0),
        Session(source="claude-code", session_id="s9", agent="claude-code", repo="github.com/o/other",
                branch="feat-a", first_ts=T0),
        pr(1, "feat-a", "merged", reverted=True), pr(2, "feat-b", "closed"), pr(3, "loop-x", "merged", runs=["r1"]),
        pr(4, "trailered", "merged", agents=["cursor"]), pr(5, "copilot/y", "merged", agents=["copilot"],
                                                           author="copilot-swe-agent[bot]", bot=True),
        pr(6, "plain", "merged"), pr(7, "plain2", "closed"),
    )
    store.add_usage([
        usage("u1", "claude-code", "s1", 1.25), usage("u2", "claude-code", "s1", None),
        usage("u3", "claude-code", "s2", 0.75), usage("u4", "codex", "c1", 2.0, agent="codex", model="gpt-5"),
        usage("u5", "codex", "c2", 4.0, agent="codex", model="gpt-5"),
        usage("u6", "claude-code", "s9", 8.0),
        usage("u7", "loop", "att-1", 0.5, run="r1", agent="builtin", model="qwen"),
        usage("u8", "loop", "att-2", 0.25, run="r-none", agent="builtin", model="qwen"),
    ])
    return store


