"""The same sync, attribution and KPIs on a real PostgreSQL store (the SQLAlchemy path of `Db`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from loopmeter.outcomes import github, kpis
from loopmeter.outcomes.attribution import attribute
from loopmeter.outcomes.sync import Db, sync_git, sync_github
from loopmeter.store.models import PullRequest
from tests.outcomes.seed import seed_prs
from tests.outcomes.test_gitlocal import make_repo
from tests.servers.github_server import GitHubServer, pr

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def test_git_and_github_sync_then_kpis_on_postgres(pg_store, tmp_path):
    shas = make_repo(tmp_path)
    srv = GitHubServer(token="t")
    srv.add_pr("o/app", pr(9, "feat", repo="o/app", created="2026-11-01T10:00:00Z", merged="2026-11-02T10:00:00Z",
                           merge_sha="d" * 40))
    srv.add_pr("o/app", pr(10, "revert-9", repo="o/app", created="2026-11-03T10:00:00Z",
                           merged="2026-11-03T11:00:00Z", body="Reverts o/app#9"))
    with Db.of(pg_store) as db, srv, github.Client(srv.url, "t") as client:
        assert not db.raw
        sync_git(db, Path(shas["path"]), lambda u: "github.com/o/app", since=None, now=NOW)
        sync_github(db, client, "o/app", lambda u: "github.com/o/app", since=None, now=NOW)
        sync_git(db, Path(shas["path"]), lambda u: "github.com/o/app", since=None, now=NOW)  # nothing new
    assert pg_store.get(PullRequest, ("github.com/o/app", 8)).reverted_by == shas["revert"][:12]
    nine = pg_store.get(PullRequest, ("github.com/o/app", 9))
    assert nine.reverted_by == "#10" and nine.host == "github"
    assert pg_store.count(PullRequest) == 4


def test_attribution_on_postgres_matches_sqlite(pg_store, store):
    seed_prs(pg_store)
    seed_prs(store)
    on_pg, on_sqlite = kpis.summary(attribute(pg_store)), kpis.summary(attribute(store))
    assert on_pg == on_sqlite
    assert on_pg["unattributed_cost_usd"] == pytest.approx(12.25)
