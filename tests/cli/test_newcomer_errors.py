"""The errors a newcomer meets: each one clear line and a hint, exit code 2, no traceback."""

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import loopmeter_cmd


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    (r / "a.txt").write_text("a\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x")
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=r, env=env, check=True)
    return r


def lm(*args, cwd=None, env=None, timeout=120):
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    base["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    return subprocess.run(loopmeter_cmd(*args), cwd=cwd, env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_clear(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and any(ln.startswith("hint: ") for ln in lines), out.stderr
    for needle in needles:
        assert needle in out.stderr


def test_not_a_git_repo(tmp_path):
    assert_clear(lm("run", "fix it", "--check", "true", "--agent", "oracle", cwd=tmp_path), "not a git repository")


def test_unknown_agent(repo):
    assert_clear(lm("run", "x", "--check", "true", "--agent", "frobnicator", "--repo", str(repo)),
                 "unknown agent 'frobnicator'", "builtin")


def test_agent_cli_not_installed(repo):
    out = lm("run", "x", "--check", "true", "--agent", "cursor", "--repo", str(repo), env={"PATH": "/usr/bin:/bin"})
    assert_clear(out, "cursor", "install")


def test_missing_api_key(repo):
    assert_clear(lm("run", "x", "--check", "true", "--agent", "builtin:anthropic/claude-sonnet-4-5",
                    "--repo", str(repo)), "ANTHROPIC_API_KEY")


def test_bad_policy_file_names_file_line_and_field(repo, tmp_path):
    bad = tmp_path / "team.yaml"
    bad.write_text("name: team\nnetwork:\n  allow: 5\n")
    assert_clear(lm("run", "x", "--check", "true", "--agent", "oracle", "--repo", str(repo), "--policy", str(bad)),
                 "team.yaml:3", "network.allow")


def test_unknown_suite():
    assert_clear(lm("eval", "run", "no-such-suite", "--agent", "oracle", "--agent", "nop"),
                 "unknown suite 'no-such-suite'", "gold")


def test_database_locked(repo, loopmeter_home, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "s.jsonl").write_text("")
    assert lm("usage", "daily", "--no-ingest").returncode == 0  # creates the store
    holder = sqlite3.connect(loopmeter_home / "loopmeter.db", timeout=1)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = lm("run", "x", "--check", "true", "--agent", "nop", "--repo", str(repo), "--max-iters", "1",
                 env={"LOOPMETER_BUSY_TIMEOUT_MS": "300"})
    finally:
        holder.rollback()
        holder.close()
    assert_clear(out, "locked")


def test_bubblewrap_missing(repo, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("git", "sh", "env"):
        os.symlink(subprocess.run(["which", name], capture_output=True, text=True).stdout.strip(), bindir / name)
    os.symlink(sys.executable, bindir / "python3")
    out = lm("run", "x", "--check", "true", "--agent", "nop", "--repo", str(repo), env={"PATH": str(bindir)})
    assert_clear(out, "bwrap", "apt-get install bubblewrap")


def test_debug_shows_the_traceback(tmp_path):
    out = lm("--debug", "run", "x", "--check", "true", "--agent", "oracle", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" in out.stderr
