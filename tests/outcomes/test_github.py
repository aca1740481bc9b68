"""GitHub REST sync against a scripted server on 127.0.0.1: pagination, rate-limit waits,
5xx retries, a bad token, bad JSON, and incremental sync by `updated_at`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from loopmeter.errors import LoopmeterError
from loopmeter.outcomes import github
from loopmeter.outcomes.sync import sync_github
from loopmeter.store.models import PullRequest, SyncCursor
from tests.servers.github_server import GitHubServer, commit, pr, review

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
CLAUDE = "Fix parsing\n\nCo-Authored-By: Claude Opus 4.7 (1M context) <noreply@anthropic.com>\n"


def ident(url: str) -> str:
    return "github.com/" + url.split("github.com/", 1)[1].removesuffix(".git").lower()


def _server(n: int = 3) -> GitHubServer:
    srv = GitHubServer(token="t0k")
    for i in range(1, n + 1):
        srv.add_pr("o/r", pr(i, f"feat-{i}", created=f"2026-11-{i % 28 + 1:02d}T10:00:00Z",
                             updated=f"2026-11-{i % 28 + 1:02d}T12:{i % 60:02d}:00Z"))
    return srv


def _prs(store) -> dict[int, PullRequest]:
    with store.session() as s:
        return {p.number: p for p in s.exec(select(PullRequest)).scalars()}  # type: ignore[call-overload]


def test_follows_link_pagination_and_reads_reviews_commits_and_bots(store, any_db):
    srv = _server(0)
    srv.per_page_max = 2  # five PRs come on three pages
    srv.add_pr("o/r", pr(1, "fix", created="2026-11-01T10:00:00Z", merged="2026-11-02T10:00:00Z", merge_sha="a" * 40),
               reviews=[review("COMMENTED", "2026-11-01T09:00:00Z", user="alice"),  # the author's own: not a review
                        review("CHANGES_REQUESTED", "2026-11-01T12:00:00Z"),
                        review("APPROVED", "2026-11-02T09:00:00Z")],
               commits=[commit(CLAUDE, "2026-11-01T08:00:00Z"), commit("address review", "2026-11-01T15:00:00Z")])
    srv.add_pr("o/r", pr(2, "copilot/x", author="copilot-swe-agent[bot]", created="2026-11-03T10:00:00Z",
                         closed="2026-11-04T10:00:00Z"))
    srv.add_pr("o/r", pr(3, "deps", author="dependabot[bot]", created="2026-11-05T10:00:00Z"))
    srv.add_pr("o/r", pr(4, "run", created="2026-11-05T11:00:00Z"),
               commits=[commit("loop\n\nLoopmeter-Run: r-123\n")])
    srv.add_pr("o/r", pr(5, "revert-1-fix", created="2026-11-06T10:00:00Z", merged="2026-11-07T10:00:00Z",
                         body="Reverts o/r#1"))
    with srv, github.Client(srv.url, "t0k") as client:
        out = sync_github(any_db, client, "o/r", ident, since=None, now=NOW)
    assert out["prs"] == 5 and out["identity"] == "github.com/o/r"
    pages = [r for r in srv.requests if r["path"] == "/repos/o/r/pulls"]
    assert len(pages) == 3
    prs = _prs(store)
    one = prs[1]
    assert (one.state, one.branch, one.changes_requested, one.commits_after_review) == ("merged", "fix", 1, 1)
    assert one.first_review_at.replace(tzinfo=UTC) == datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert json.loads(one.agents) == ["claude-code"]
    assert one.reverted_by == "#5" and one.reverted_at.replace(tzinfo=UTC) == datetime(2026, 11, 7, 10, tzinfo=UTC)
    assert (prs[2].state, prs[2].author_is_bot, json.loads(prs[2].agents)) == ("closed", True, ["copilot"])
    assert (prs[3].state, prs[3].author_is_bot, json.loads(prs[3].agents)) == ("open", True, [])
    assert json.loads(prs[4].runs) == ["r-123"]


def test_incremental_sync_reads_only_prs_updated_since_the_cursor(store, db):
    srv = _server(250)
    with srv:
        with github.Client(srv.url, "t0k") as client:
            assert sync_github(db, client, "o/r", ident, since=None, now=NOW)["prs"] == 250
        first = len(srv.requests)
        assert first == 3 + 2 * 250  # three list pages, reviews and commits of each PR
        srv.add_pr("o/r", pr(999, "late", created="2026-11-30T10:00:00Z", updated="2026-12-01T10:00:00Z"))
        with github.Client(srv.url, "t0k") as client:
            out = sync_github(db, client, "o/r", ident, since=None, now=NOW)
    assert out["prs"] == 2  # the new one, and the one updated at the cursor's instant (read again)
    assert len(srv.requests) - first == 1 + 2 * 2
    assert len(_prs(store)) == 251
    assert json.loads(store.get(SyncCursor, ("github", "o/r")).cursor)["updated_at"].startswith("2026-12-01T10:00")


def test_waits_out_a_rate_limit_with_retry_after(store, db):
    srv = _server(2)
    srv.fail("/repos/o/r/pulls", 429, headers={"Retry-After": "1"})
    srv.fail("/reviews", 403, headers={"X-RateLimit-Remaining": "0",
                                       "X-RateLimit-Reset": str(int(time.time()))})  # reset now: waits ~1 s
    with srv, github.Client(srv.url, "t0k") as client:
        t0 = time.monotonic()
        out = sync_github(db, client, "o/r", ident, since=None, now=NOW)
        took = time.monotonic() - t0
    assert out["prs"] == 2 and len(_prs(store)) == 2
    assert out["waited_s"] >= 1.5 and took >= 1.5


def test_a_rate_limit_longer_than_the_cap_is_one_clear_error(store, db):
    srv = _server(2)
    srv.fail("/pulls", 429, headers={"Retry-After": "3600"})
    with srv, github.Client(srv.url, "t0k", max_wait_s=5) as client, pytest.raises(github.GitHubError) as err:
        sync_github(db, client, "o/r", ident, since=None, now=NOW)
    assert "rate limit" in err.value.message and "3600 s" in err.value.message
    assert store.get(SyncCursor, ("github", "o/r")).last_error.startswith("GitHub rate limit")


def test_retries_5xx_a_bounded_number_of_times(store, db):
    srv = _server(2)
    srv.fail("/commits", 502, times=2)
    with srv, github.Client(srv.url, "t0k", backoff_s=0.01) as client:
        assert sync_github(db, client, "o/r", ident, since=None, now=NOW)["prs"] == 2
    srv2 = _server(1)
    srv2.fail("/repos/o/r/pulls", 500, times=10)
    with srv2, github.Client(srv2.url, "t0k", backoff_s=0.01, retries=3) as client, \
            pytest.raises(github.GitHubError) as err:
        sync_github(db, client, "o/r", ident, since=None, now=NOW)
    assert err.value.message == "GitHub answered 500 to /repos/o/r/pulls 4 times"
    assert len(srv2.requests) == 4


def test_a_bad_token_is_one_line_naming_the_fix(store, db):
    with _server(1) as srv, github.Client(srv.url, "wrong") as client, pytest.raises(github.GitHubError) as err:
        sync_github(db, client, "o/r", ident, since=None, now=NOW)
    assert "refused the token" in err.value.message and "GITHUB_TOKEN" in (err.value.hint or "")
    assert "wrong" not in err.value.message + (err.value.hint or "")
    assert _prs(store) == {}


def test_bad_json_is_one_line_and_stores_nothing(store, db):
    srv = _server(1)
    srv.fail("/repos/o/r/pulls", 200, body=b"<html>proxy login</html>")
    with srv, github.Client(srv.url, "t0k") as client, pytest.raises(github.GitHubError) as err:
        sync_github(db, client, "o/r", ident, since=None, now=NOW)
    assert err.value.message == "GitHub's answer to /repos/o/r/pulls is not JSON"
    assert _prs(store) == {}


def test_api_url_comes_from_the_flag_then_the_environment_then_the_public_api():
    assert github.api_url("http://127.0.0.1:9/", {"GITHUB_API_URL": "http://x"}) == "http://127.0.0.1:9"
    assert github.api_url(None, {"GITHUB_API_URL": "https://ghe.local/api/v3/"}) == "https://ghe.local/api/v3"
    assert github.api_url(None, {}) == "https://api.github.com"
    with pytest.raises(LoopmeterError, match="must be https"):  # the token would cross a network in clear
        github.api_url("http://ghe.example.com/api/v3", {})


def test_prs_read_before_a_failure_are_kept_and_the_cursor_stays(store, db):
    srv = _server(6)
    srv.fail("/pulls/3/commits", 500, times=2)  # both tries of the first sync
    with srv:
        with github.Client(srv.url, "t0k", backoff_s=0.01, retries=1, workers=1) as client, \
                pytest.raises(github.GitHubError):
            sync_github(db, client, "o/r", ident, since=None, now=NOW)
        kept = set(_prs(store))
        assert kept and 3 not in kept and len(kept) < 6
        assert store.get(SyncCursor, ("github", "o/r")).cursor in (None, "{}")
        with github.Client(srv.url, "t0k") as client:
            assert sync_github(db, client, "o/r", ident, since=None, now=NOW)["prs"] == 6
    assert set(_prs(store)) == set(range(1, 7))


def test_a_fork_prs_branch_is_named_with_its_owner_so_local_sessions_never_match_it():
    item = pr(3, "main", created="2026-11-01T10:00:00Z")
    item["head"]["repo"] = {"full_name": "mallory/r"}
    assert github.pr_row("github.com/o/r", item, [], [])["branch"] == "mallory:main"
    item["head"]["repo"] = {"full_name": "O/R"}
    assert github.pr_row("github.com/o/r", item, [], [])["branch"] == "main"


def test_an_oversized_answer_is_one_error_not_memory(store, db):
    srv = _server(1)
    srv.fail("/repos/o/r/pulls", 200, body=b" " * (github.MAX_BODY + 1))
    with srv, github.Client(srv.url, "t0k") as client, pytest.raises(github.GitHubError) as err:
        sync_github(db, client, "o/r", ident, since=None, now=NOW)
    assert err.value.message == "GitHub's answer to /repos/o/r/pulls is over 32 MiB"
