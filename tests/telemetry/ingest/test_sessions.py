"""Sessions know where they worked: session rows from real logs in tmp dirs, real git repos."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loopmeter.outcomes.identity import find_checkout, repo_identity, safe_url
from loopmeter.telemetry.ingest import discover, ingest, load_cursors, plan, run

TOKEN = "ghp_s3cretT0kenThatMustNotBeStored"


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_repo(path: Path, origin: str | None = None) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    if origin:
        git(path, "remote", "add", "origin", origin)
    return path


def claude_line(session: str, cwd: str, branch: str, ts: str, request: str, output: int = 10) -> str:
    return json.dumps({
        "sessionId": session, "cwd": cwd, "gitBranch": branch, "type": "assistant", "timestamp": ts,
        "requestId": request, "message": {"id": f"msg_{request}", "model": "claude-sonnet-4-5-20250929",
                                          "usage": {"input_tokens": 5, "output_tokens": output}}}) + "\n"


def codex_lines(session: str, cwd: str, git_info: dict[str, Any] | None, calls: int) -> str:
    meta: dict[str, Any] = {"id": session, "timestamp": "2026-11-09T10:00:00.000Z", "cwd": cwd,
                            "originator": "codex_cli_rs", "cli_version": "0.169.0"}
    if git_info is not None:
        meta["git"] = git_info
    lines = [{"timestamp": "2026-11-09T10:00:00.000Z", "type": "session_meta", "payload": meta},
             {"timestamp": "2026-11-09T10:00:01.000Z", "type": "turn_context",
              "payload": {"cwd": cwd, "model": "gpt-5-codex"}}]
    for i in range(1, calls + 1):
        total = {"input_tokens": 100 * i, "cached_input_tokens": 0, "output_tokens": 10 * i,
                 "reasoning_output_tokens": 0}
        lines.append({"timestamp": f"2026-11-09T10:0{i}:00.000Z", "type": "event_msg",
                      "payload": {"type": "token_count", "info": {"total_token_usage": total}}})
    return "".join(json.dumps(x) + "\n" for x in lines)


def sessions(db: str) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["session_id"]: dict(r) for r in conn.execute("SELECT * FROM session")}
    finally:
        conn.close()


def whole_store_text(db: str) -> str:
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_repo_identity_agrees_across_the_forms_a_repository_is_cloned_by(tmp_path):
    forms = ["git@github.com:Acme/Widget.git", "https://github.com/acme/widget", "https://github.com/acme/widget.git/",
             f"https://x-access-token:{TOKEN}@GitHub.com/Acme/Widget.git", "ssh://git@github.com:22/acme/widget.git",
             "https://github.com/acme/widget?tab=readme#top"]
    assert {repo_identity(f) for f in forms} == {"github.com/acme/widget"}
    assert repo_identity(str(tmp_path / "a" / ".." / "repo")) == str((tmp_path / "repo").resolve())
    assert TOKEN not in (safe_url(f"https://user:{TOKEN}@github.com/acme/widget.git") or "")
    assert safe_url(f"https://{TOKEN}@github.com/acme/widget.git") == "https://github.com/acme/widget"
    assert safe_url("git@github.com:acme/widget.git") == "git@github.com:acme/widget.git"
    assert safe_url("/some/local/path") is None


def test_find_checkout_reads_origin_and_does_not_follow_a_linked_dotgit(tmp_path):
    repo = make_repo(tmp_path / "repo", origin=f"https://bot:{TOKEN}@github.com/Acme/Widget.git")
    (repo / "src" / "deep").mkdir(parents=True)
    found = find_checkout(str(repo / "src" / "deep"))
    assert found is not None
    assert found.top == str(repo) and found.origin == "https://github.com/Acme/Widget"
    assert found.identity == "github.com/acme/widget"
    # a folder whose .git is a link to a real repository is not taken for a checkout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".git").symlink_to(repo / ".git")
    assert find_checkout(str(elsewhere)) is None
    assert find_checkout("relative/path") is None
    assert find_checkout(str(tmp_path / "no" / "such" / "dir")) is None


def test_claude_code_sessions_store_cwd_branch_and_repo_without_credentials(tmp_path, store, sqlite_url):
    repo = make_repo(tmp_path / "widget", origin=f"https://x-access-token:{TOKEN}@github.com/Acme/Widget.git")
    (repo / "pkg").mkdir()
    plain = make_repo(tmp_path / "plain")  # no remote: the top level is the identity
    logs = tmp_path / "claude" / "projects" / "-widget"
    logs.mkdir(parents=True)
    (logs / "s1.jsonl").write_text(
        claude_line("s1", str(repo / "pkg"), "feature/login", "2026-11-09T10:00:00.000Z", "r1")
        + claude_line("s1", str(repo / "pkg"), "feature/login", "2026-11-09T10:05:00.000Z", "r2"))
    (logs / "s2.jsonl").write_text(claude_line("s2", str(plain), "main", "2026-11-09T11:00:00.000Z", "r3"))
    (logs / "s3.jsonl").write_text(claude_line("s3", str(tmp_path / "gone"), "dev", "2026-11-09T12:00:00.000Z", "r4"))

    report = ingest(store, paths=[tmp_path / "claude"], workers=1)
    assert report.rows_added == 4
    db = sqlite_url.removeprefix("sqlite:///")
    rows = sessions(db)
    assert set(rows) == {"s1", "s2", "s3"}
    s1 = rows["s1"]
    assert (s1["source"], s1["agent"], s1["branch"], s1["cwd"]) == (
        "claude-code-log", "claude-code", "feature/login", str(repo / "pkg"))
    assert s1["repo"] == "github.com/acme/widget"
    assert s1["repo_url"] == "https://github.com/Acme/Widget"
    assert s1["first_ts"].startswith("2026-11-09 10:00:00") and s1["last_ts"].startswith("2026-11-09 10:05:00")
    assert rows["s2"]["repo"] == str(plain.resolve()) and rows["s2"]["repo_url"] is None
    assert rows["s3"]["repo"] is None and rows["s3"]["branch"] == "dev"  # the cwd is kept even without a repo
    assert TOKEN not in whole_store_text(db)


def test_codex_session_meta_git_gives_branch_commit_and_repo(tmp_path, store, sqlite_url):
    day = tmp_path / "codex" / "sessions" / "2026" / "11" / "09"
    day.mkdir(parents=True)
    sid = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    git_info = {"commit_hash": "a" * 40, "branch": "fix/timeout",
                "repository_url": f"https://oauth2:{TOKEN}@gitlab.example.com/Team/Svc.git"}
    (day / f"rollout-2026-11-09T10-00-00-{sid}.jsonl").write_text(codex_lines(sid, "/home/dev/svc", git_info, 3))
    report = ingest(store, paths=[tmp_path / "codex"], workers=1)
    assert report.rows_added == 3
    db = sqlite_url.removeprefix("sqlite:///")
    row = sessions(db)[sid]
    assert (row["source"], row["agent"], row["cwd"], row["branch"], row["commit"]) == (
        "codex-log", "codex", "/home/dev/svc", "fix/timeout", "a" * 40)
    assert row["repo"] == "gitlab.example.com/team/svc"
    assert row["repo_url"] == "https://gitlab.example.com/Team/Svc"
    assert TOKEN not in whole_store_text(db)
    # the usage rows join on (source, session_id)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM usage u JOIN session s ON s.source = u.source "
                        "AND s.session_id = u.session_id").fetchone()[0] == 3
    conn.close()


def test_incremental_ingest_stays_exact_and_moves_the_session_on(tmp_path, store, sqlite_url):
    repo = make_repo(tmp_path / "widget", origin="git@github.com:acme/widget.git")
    logs = tmp_path / "claude" / "projects" / "-widget"
    logs.mkdir(parents=True)
    log = logs / "s1.jsonl"
    log.write_text(claude_line("s1", str(repo), "feature/a", "2026-11-09T10:00:00.000Z", "r1")
                   + claude_line("s1", str(repo), "feature/a", "2026-11-09T10:01:00.000Z", "r2"))
    assert ingest(store, paths=[tmp_path / "claude"], workers=1).rows_added == 2
    # Codex, read in two pieces: its git info is kept in the cursor for the second read
    day = tmp_path / "codex" / "sessions" / "2026" / "11" / "09"
    day.mkdir(parents=True)
    sid = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"
    rollout = day / f"rollout-2026-11-09T10-00-00-{sid}.jsonl"
    lines = codex_lines(sid, str(repo), {"branch": "feature/b", "repository_url": "git@github.com:acme/widget.git"},
                        4).splitlines(keepends=True)
    rollout.write_text("".join(lines[:4]))  # meta, turn context, two calls
    assert ingest(store, paths=[tmp_path / "codex"], workers=1).rows_added == 2

    with log.open("a") as fh:
        fh.write(claude_line("s1", str(repo), "feature/a", "2026-11-09T10:01:00.000Z", "r2"))  # a repeat
        fh.write(claude_line("s1", str(repo), "feature/b", "2026-11-09T10:30:00.000Z", "r3"))
    with rollout.open("a") as fh:
        fh.write("".join(lines[4:]))
    report = ingest(store, paths=[tmp_path], workers=1)
    assert report.rows_added == 3  # r3 and two Codex calls; the repeat counts once
    db = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*), sum(output_tokens) FROM usage").fetchone() == (7, 10 + 10 + 10 + 40)
    conn.close()
    rows = sessions(db)
    s1 = rows["s1"]
    assert s1["first_ts"].startswith("2026-11-09 10:00:00") and s1["last_ts"].startswith("2026-11-09 10:30:00")
    assert s1["branch"] == "feature/b"  # the latest call's branch
    assert rows[sid]["branch"] == "feature/b" and rows[sid]["last_ts"].startswith("2026-11-09 10:04:00")
    assert {r["repo"] for r in rows.values()} == {"github.com/acme/widget"}
    assert ingest(store, paths=[tmp_path], workers=1).rows_added == 0


def test_a_big_transcript_read_in_ranges_by_two_workers_makes_one_session(tmp_path, store, sqlite_url):
    repo = make_repo(tmp_path / "widget", origin="https://github.com/acme/widget")
    logs = tmp_path / "claude" / "projects" / "-widget"
    logs.mkdir(parents=True)
    pad = "x" * 2000
    with (logs / "big.jsonl").open("w") as fh:
        for i in range(600):
            fh.write(json.dumps({"type": "user", "sessionId": "big", "message": {"content": pad}}) + "\n")
            fh.write(claude_line("big", str(repo), "feature/big", f"2026-11-09T{10 + i // 60:02d}:{i % 60:02d}:00.000Z",
                                 f"r{i}"))
    work = plan(discover(paths=[tmp_path / "claude"]), load_cursors(sqlite_url, store))
    report = run(store, sqlite_url, work, workers=2, split_bytes=256 << 10, pool_min_bytes=0, batch_rows=50)
    assert report.rows_added == 600
    row = sessions(sqlite_url.removeprefix("sqlite:///"))["big"]
    assert row["first_ts"].startswith("2026-11-09 10:00:00") and row["last_ts"].startswith("2026-11-09 19:59:00")
    assert (row["branch"], row["repo"]) == ("feature/big", "github.com/acme/widget")


def test_loop_attempt_sessions_take_the_runs_place(store, sqlite_url):
    from datetime import UTC, datetime

    from loopmeter.records import UsageRow

    rows = [UsageRow(key=f"k{i}", source="claude-code-json", ts=datetime(2026, 11, 9, 10, i, tzinfo=UTC),
                     agent="claude-code", session_id="sess-1", attempt_id="att-1", input_tokens=1, output_tokens=1)
            for i in range(3)]
    store.add_usage(rows)
    store.add_attempt_sessions("att-1", cwd="/wt/att-1", branch="loopmeter/run-1/1", commit="b" * 40,
                               repo="github.com/acme/widget", repo_url="https://github.com/acme/widget")
    row = sessions(sqlite_url.removeprefix("sqlite:///"))["sess-1"]
    assert (row["source"], row["branch"], row["repo"], row["cwd"]) == (
        "claude-code-json", "loopmeter/run-1/1", "github.com/acme/widget", "/wt/att-1")
    assert row["first_ts"].startswith("2026-11-09 10:00:00") and row["last_ts"].startswith("2026-11-09 10:02:00")


@pytest.mark.timeout(120)
def test_sessions_on_postgresql(tmp_path, pg_store):
    repo = make_repo(tmp_path / "widget", origin=f"https://{TOKEN}@github.com/acme/widget.git")
    logs = tmp_path / "claude" / "projects" / "-widget"
    logs.mkdir(parents=True)
    (logs / "s1.jsonl").write_text(
        claude_line("s1", str(repo), "feature/pg", "2026-11-09T10:00:00.000Z", "r1")
        + claude_line("s1", str(repo), "feature/pg", "2026-11-09T10:09:00.000Z", "r2"))
    assert ingest(pg_store, paths=[tmp_path / "claude"], workers=1).rows_added == 2
    with pg_store.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT branch, repo, repo_url, first_ts, last_ts FROM session").one()
    assert row[:3] == ("feature/pg", "github.com/acme/widget", "https://github.com/acme/widget")
    assert (row[4] - row[3]).total_seconds() == 540


def test_the_demos_sample_sessions_know_their_branch_and_codex_its_repository(tmp_path, store, sqlite_url):
    from loopmeter.demo_logs import write_sample_logs

    root = write_sample_logs(tmp_path / "sample", days=6)
    report = ingest(store, paths=[root], workers=1)
    assert report.rows_added > 0
    rows = sessions(sqlite_url.removeprefix("sqlite:///")).values()
    assert rows and all(r["branch"] and r["cwd"].startswith("/home/dev/sample/") for r in rows)
    codex = [r for r in rows if r["source"] == "codex-log"]
    assert codex and all(r["repo"].startswith("example.com/sample/") and r["commit"] for r in codex)


def test_logs_read_before_sessions_were_stored_are_read_again_once(tmp_path, store, sqlite_url):
    repo = make_repo(tmp_path / "widget", origin="git@github.com:acme/widget.git")
    logs = tmp_path / "claude" / "projects" / "-widget"
    logs.mkdir(parents=True)
    (logs / "s1.jsonl").write_text(claude_line("s1", str(repo), "feature/old", "2026-11-09T10:00:00.000Z", "r1"))
    assert ingest(store, paths=[tmp_path / "claude"], workers=1).rows_added == 1
    db = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(db)  # as an older version left it: no session rows, cursors without the mark
    conn.execute("DELETE FROM session")
    conn.execute("UPDATE ingest_cursor SET state = json_remove(state, '$.sessions')")
    conn.commit()
    conn.close()
    report = ingest(store, paths=[tmp_path / "claude"], workers=1)
    assert (report.files_read, report.rows_added) == (1, 0)
    assert sessions(db)["s1"]["branch"] == "feature/old"
    assert ingest(store, paths=[tmp_path / "claude"], workers=1).files_read == 0
