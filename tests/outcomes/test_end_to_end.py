"""End to end: Claude Code and Codex logs whose sessions work on branches of a test
repository, ingested by `loopmeter usage`; the scripted GitHub server's PRs for those branches
(merged, closed unmerged, merged then reverted, one no agent touched), synced by
`loopmeter outcomes sync`. Each PR's cost is the sum of its sessions' usage, and merge and
revert rates come out as constructed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import loopmeter_cmd
from tests.servers.github_server import GitHubServer, commit, pr, review


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "A",
           "GIT_AUTHOR_EMAIL": "a@example.com", "GIT_COMMITTER_NAME": "A", "GIT_COMMITTER_EMAIL": "a@example.com"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def claude_log(path: Path, session: str, cwd: Path, branch: str, calls: int) -> None:
    lines = []
    for i in range(calls):
        lines.append(json.dumps({
            "type": "assistant", "sessionId": session, "cwd": str(cwd), "gitBranch": branch, "isSidechain": False,
            "timestamp": f"2026-11-09T10:{i:02d}:00.000Z", "requestId": f"req_{session}_{i}", "uuid": f"u{session}{i}",
            "message": {"id": f"msg_{session}_{i}", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                        "usage": {"input_tokens": 1000 * (i + 1), "output_tokens": 200, "cache_read_input_tokens": 5000,
                                  "cache_creation_input_tokens": 0}}}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def codex_log(path: Path, session: str, cwd: Path, branch: str, calls: int) -> None:
    meta = {"id": session, "timestamp": "2026-11-09T10:00:00.000Z", "cwd": str(cwd), "cli_version": "0.46.0",
            "git": {"commit_hash": "0" * 40, "branch": branch, "repository_url": "git@github.com:Acme/Widget.git"}}
    lines: list[dict[str, Any]] = [
        {"timestamp": "2026-11-09T10:00:00.000Z", "type": "session_meta", "payload": meta},
        {"timestamp": "2026-11-09T10:00:01.000Z", "type": "turn_context", "payload": {"cwd": str(cwd), "model": "gpt-5-codex"}}]
    for i in range(1, calls + 1):
        total = {"input_tokens": 3000 * i, "cached_input_tokens": 1000 * i, "output_tokens": 400 * i,
                 "reasoning_output_tokens": 100 * i, "total_tokens": 3400 * i}
        lines.append({"timestamp": f"2026-11-09T11:{i:02d}:00.000Z", "type": "event_msg",
                      "payload": {"type": "token_count", "info": {"total_token_usage": total}}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def run(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(loopmeter_cmd(*args), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def world(tmp_path: Path, loopmeter_home: Path):
    repo = tmp_path / "widget"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://github.com/acme/widget.git")
    (repo / "README").write_text("widget\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "start")
    (repo / "src").mkdir()
    logs = tmp_path / "logs"
    claude = logs / "claude" / "projects" / "-widget"
    codex = logs / "codex" / "sessions" / "2026" / "11" / "09"
    claude_log(claude / "cc-merged.jsonl", "cc-merged", repo / "src", "feat-merged", 3)
    claude_log(claude / "cc-reverted.jsonl", "cc-reverted", repo, "feat-reverted", 2)
    claude_log(claude / "cc-orphan.jsonl", "cc-orphan", repo, "spike-no-pr", 2)  # no PR: unattributed
    codex_log(codex / "rollout-2026-11-09T10-00-00-cx-closed.jsonl", "cx-closed", repo, "feat-closed", 3)
    codex_log(codex / "rollout-2026-11-09T10-00-00-cx-reverted.jsonl", "cx-reverted", repo, "feat-reverted", 2)

    srv = GitHubServer(token="e2e-token")
    day = "2026-11-09T"
    srv.add_pr("acme/widget", pr(1, "feat-merged", repo="acme/widget", created=day + "09:00:00Z",
                                 merged="2026-11-10T09:00:00Z"),
               reviews=[review("APPROVED", day + "15:00:00Z")],
               commits=[commit("login\n\nCo-Authored-By: Claude <noreply@anthropic.com>\n", day + "10:30:00Z")])
    srv.add_pr("acme/widget", pr(2, "feat-closed", repo="acme/widget", created=day + "09:00:00Z",
                                 closed="2026-11-11T09:00:00Z"),
               reviews=[review("CHANGES_REQUESTED", day + "13:00:00Z")])
    srv.add_pr("acme/widget", pr(3, "feat-reverted", repo="acme/widget", created=day + "09:00:00Z",
                                 merged="2026-11-09T21:00:00Z", merge_sha="c" * 40))
    srv.add_pr("acme/widget", pr(4, "docs-typo", author="bob", repo="acme/widget", created=day + "08:00:00Z",
                                 merged=day + "12:00:00Z"))
    srv.add_pr("acme/widget", pr(5, "revert-3-feat-reverted", author="bob", repo="acme/widget",
                                 created="2026-11-12T08:00:00Z", merged="2026-11-12T09:00:00Z",
                                 title='Revert "PR 3"', body="Reverts acme/widget#3"))
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "TZ", "GITHUB_API_URL")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), LOOPMETER_HOME=str(loopmeter_home), GITHUB_TOKEN="e2e-token", NO_COLOR="1",
               PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    with srv:
        yield {"repo": repo, "logs": logs, "srv": srv, "env": env, "db": str(loopmeter_home / "loopmeter.db")}


def session_costs(db: str) -> dict[str, tuple[float, int]]:
    conn = sqlite3.connect(db)
    try:
        return {sid: (cost or 0.0, unpriced) for sid, cost, unpriced in conn.execute(
            "SELECT session_id, SUM(cost_usd), SUM(cost_usd IS NULL) FROM usage GROUP BY session_id")}
    finally:
        conn.close()


def test_prs_cost_their_sessions_usage_and_rates_come_out_as_constructed(world):
    env = world["env"]
    run(env, "usage", "--path", str(world["logs"]), "--json")
    out = json.loads(run(env, "outcomes", "sync", "--repo", str(world["repo"]), "--github", "acme/widget",
                         "--api-url", world["srv"].url, "--json"))
    assert [r["source"] for r in out["repos"]] == ["git", "github"]
    assert {r["repo"] if "repo" in r and r["source"] == "git" else r["identity"] for r in out["repos"]} == \
        {"github.com/acme/widget"}
    prs = {p["number"]: p for p in json.loads(run(env, "outcomes", "prs", "--json"))["prs"]}
    assert {n: (p["state"], p["attribution"], p["agents"], p["reverted"]) for n, p in prs.items()} == {
        1: ("merged", "session", ["claude-code"], False),
        2: ("closed", "session", ["codex"], False),
        3: ("merged", "session", ["claude-code", "codex"], True),
        4: ("merged", "none", [], False),
        5: ("merged", "none", [], False),
    }
    costs = session_costs(world["db"])
    for number, sessions in {1: ["cc-merged"], 2: ["cx-closed"], 3: ["cc-reverted", "cx-reverted"]}.items():
        assert sorted(s["session_id"] for s in prs[number]["sessions"]) == sorted(sessions)
        expected = sum(costs[s][0] for s in sessions)
        assert expected > 0
        assert prs[number]["cost_usd"] == pytest.approx(expected, rel=1e-6)
        assert prs[number]["unpriced_calls"] == sum(costs[s][1] for s in sessions)
    assert prs[4]["cost_usd"] is None and prs[4]["sessions"] == []
    assert prs[1]["time_to_merge_s"] == 24 * 3600 and prs[2]["review_rounds"] == 1

    summary = json.loads(run(env, "outcomes", "--json"))
    rows = {r["agent"]: r for r in summary["by_agent"]}
    assert list(rows)[-1] == "none"
    assert (rows["claude-code"]["prs"], rows["claude-code"]["merge_rate"], rows["claude-code"]["revert_rate"]) == (2, 1.0, 0.5)
    assert (rows["codex"]["prs"], rows["codex"]["merge_rate"], rows["codex"]["revert_rate"]) == (2, 0.5, 1.0)
    assert (rows["none"]["prs"], rows["none"]["merge_rate"], rows["none"]["revert_rate"]) == (2, 1.0, 0.0)
    lo, hi = rows["codex"]["merge_rate_ci"]
    assert lo < 0.5 < hi
    cc_cost = costs["cc-merged"][0] + costs["cc-reverted"][0] + costs["cx-reverted"][0]
    assert rows["claude-code"]["cost_per_merged_pr_usd"] == pytest.approx(cc_cost / 2, rel=1e-6)
    assert summary["unattributed_cost_usd"] == pytest.approx(costs["cc-orphan"][0], rel=1e-6)
    for key in ("agent", "prs", "merged", "merge_rate", "merge_rate_ci", "revert_rate", "p50_time_to_merge_s",
                "cost_per_merged_pr_usd"):
        assert key in rows["codex"]

    by_path = json.loads(run(env, "outcomes", "prs", "--json", "--repo", str(world["repo"] / "src")))
    assert sorted(p["number"] for p in by_path["prs"]) == [1, 2, 3, 4, 5]  # a clone's folder names its origin
    assert json.loads(run(env, "outcomes", "prs", "--json", "--repo", "https://github.com/acme/other"))["prs"] == []

    compare = run(env, "outcomes", "compare", "--agent", "claude-code", "--agent", "codex")
    assert compare.count("no detectable difference") == 3  # two PRs an arm: every interval contains 0

    again = json.loads(run(env, "outcomes", "sync", "--github", "acme/widget", "--api-url", world["srv"].url, "--json"))
    assert again["repos"][0]["prs"] <= 1  # incremental: only what was updated at the cursor's instant


def test_sync_with_a_bad_token_is_one_line(world):
    env = {**world["env"], "GITHUB_TOKEN": "nope"}
    proc = subprocess.run(loopmeter_cmd("outcomes", "sync", "--github", "acme/widget", "--api-url", world["srv"].url),
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "GitHub refused the token (401 Bad credentials)" in proc.stderr and "nope" not in proc.stderr
