"""Attribution and KPIs on a real SQLite store: sessions on a PR's head branch give its cost,
a Loopmeter-Run trailer gives the run's, trailers and bot authors name an agent without a cost,
and spend no PR claims stays unattributed. Plus the two-sample statistics the A/B uses."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from loopmeter.evals import stats
from loopmeter.outcomes import kpis
from loopmeter.outcomes.attribution import attribute
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


@pytest.fixture
def seeded(store):
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


def test_every_pr_gets_a_label_and_session_cost_is_the_sum_of_its_sessions(seeded):
    att = attribute(seeded)
    by = {p.number: p for p in att.prs}
    assert {n: p.attribution for n, p in by.items()} == {
        1: "session", 2: "session", 3: "loop", 4: "trailer", 5: "author", 6: "none", 7: "none"}
    one = by[1].as_json()
    assert one["cost_usd"] == pytest.approx(2.0) and one["unpriced_calls"] == 1
    assert sorted(s["session_id"] for s in one["sessions"]) == ["s1", "s2"]
    assert one["agents"] == ["claude-code"] and one["reverted"] is True and one["review_rounds"] == 1
    assert by[2].as_json()["cost_usd"] == pytest.approx(2.0) and by[2].agents == ["codex"]
    assert by[3].as_json()["cost_usd"] == pytest.approx(0.5) and by[3].agents == ["builtin"]
    assert by[4].as_json()["cost_usd"] is None and by[4].agents == ["cursor"]  # agent known, cost not
    assert by[5].agents == ["copilot"] and by[6].agents == []
    # unattributed: c2 (no PR on its branch), s9 (another repository), the loop run no PR names
    assert att.unattributed.cost == pytest.approx(4.0 + 8.0 + 0.25) and att.unattributed_sessions == 3
    assert att.total.cost == pytest.approx(att.unattributed.cost + 2.0 + 2.0 + 0.5)


def test_kpis_per_agent_with_the_no_agent_baseline_last(seeded):
    out = kpis.summary(attribute(seeded))
    rows = {r["agent"]: r for r in out["by_agent"]}
    assert [r["agent"] for r in out["by_agent"]][-1] == "none"
    assert (rows["none"]["prs"], rows["none"]["merged"], rows["none"]["merge_rate"]) == (2, 1, 0.5)
    cc = rows["claude-code"]
    assert (cc["prs"], cc["merged"], cc["merge_rate"], cc["revert_rate"]) == (1, 1, 1.0, 1.0)  # reverted in 2 days
    assert cc["cost_per_merged_pr_usd"] == pytest.approx(2.0) and cc["unpriced_calls"] == 1
    assert rows["codex"]["merge_rate"] == 0.0 and rows["codex"]["cost_per_merged_pr_usd"] is None
    assert rows["cursor"]["cost_per_merged_pr_usd"] is None  # trailer only: no cost, never $0
    assert cc["p50_time_to_merge_s"] == 5 * 3600 and cc["p50_time_to_first_review_s"] == 3600
    lo, hi = cc["merge_rate_ci"]
    assert (lo, hi) == pytest.approx(stats.wilson(1, 1))
    assert out["unattributed_cost_usd"] == pytest.approx(12.25)
    assert out["attribution"] == {"session": 2, "loop": 1, "trailer": 1, "author": 1, "none": 2}


def test_revert_rate_counts_reverts_within_30_days(store):
    store.save(pr(1, "a", "merged", agents=["codex"], reverted=True), pr(2, "b", "merged", agents=["codex"]))
    rows = {r["agent"]: r for r in kpis.summary(attribute(store))["by_agent"]}
    assert rows["codex"]["revert_rate"] == 0.5
    late = pr(3, "c", "merged", agents=["aider"])
    late.reverted_at = late.merged_at + timedelta(days=31)
    store.save(late)
    rows = {r["agent"]: r for r in kpis.summary(attribute(store))["by_agent"]}
    assert rows["aider"]["revert_rate"] == 0.0


def test_compare_says_no_detectable_difference_when_an_interval_contains_zero(store):
    prs = [pr(i, f"a{i}", "merged" if i % 2 else "closed", agents=["claude-code"]) for i in range(1, 11)]
    prs += [pr(100 + i, f"b{i}", "merged" if i % 2 else "closed", agents=["codex"], hours=6) for i in range(1, 11)]
    store.save(*prs)
    out = kpis.compare(attribute(store), "claude-code", "codex", n_boot=500)
    merge, revert, ttm = out["comparisons"]
    assert merge["diff"] == 0 and merge["verdict"] == stats.NO_DIFFERENCE and merge["ci"][0] < 0 < merge["ci"][1]
    assert merge["mde"] > 0.5  # ten PRs an arm cannot see less than a 50-point difference
    assert ttm["diff"] == 3600 and ttm["verdict"] == "claude-code faster"  # no spread at all: the interval is a point
    assert revert["verdict"] == stats.NO_DIFFERENCE


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10: 56/70 vs 48/80
    d, ci, se = stats.proportion_difference(48, 80, 56, 70)
    assert d == pytest.approx(0.8 - 0.6)
    assert ci == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert se == pytest.approx(math.sqrt((104 / 150) * (46 / 150) * (1 / 80 + 1 / 70)))
    assert stats.proportion_difference(0, 0, 1, 2)[1] is None


def test_median_difference_bootstrap_interval_covers_the_difference():
    a = [10.0, 12, 14, 16, 18, 20, 22]
    b = [x + 5 for x in a]
    d, ci, se = stats.median_difference(a, b, n_boot=2000)
    assert d == 5 and ci is not None and ci[0] <= 5 <= ci[1] and se > 0
    assert stats.median_difference([], b) == (None, None, 0.0)
