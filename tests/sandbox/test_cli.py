"""`loopmeter sandbox exec` and `loopmeter policy` in a subprocess, as people run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import loopmeter_cmd


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(loopmeter_cmd(*args), capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def test_exec_returns_the_commands_exit_code_and_output(tmp_path: Path) -> None:
    out = _run("sandbox", "exec", "--policy", "strict", "--workdir", str(tmp_path), "--",
               "sh", "-c", "echo made > f.txt; echo hi; exit 3")
    assert out.returncode == 3 and out.stdout == "hi\n"
    assert (tmp_path / "f.txt").read_text() == "made\n"


def test_exec_timeout_exits_124_and_summarises_the_denial(tmp_path: Path) -> None:
    out = _run("sandbox", "exec", "--workdir", str(tmp_path), "--timeout", "0.5", "--", "sleep", "30")
    assert out.returncode == 124 and "wall-clock" in out.stderr


def test_exec_summarises_proxy_denials_on_stderr(tmp_path: Path) -> None:
    code = "import urllib.request as u\ntry: u.urlopen('http://denied.example/')\nexcept Exception as e: print(e)"
    out = _run("sandbox", "exec", "--policy", "default", "--workdir", str(tmp_path), "--", "python3", "-c", code)
    assert out.returncode == 0 and "403" in out.stdout
    assert "denied by policy default" in out.stderr and "denied.example:80" in out.stderr


def test_exec_fails_closed_with_exit_125_without_bubblewrap(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap anywhere on PATH
    out = subprocess.run([sys.executable, "-m", "loopmeter", "sandbox", "exec", "--workdir", str(tmp_path), "--",
                          "true"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 125 and "bubblewrap" in out.stderr and "apt-get install bubblewrap" in out.stderr


def test_exec_sandbox_none_runs_and_is_audited(tmp_path: Path) -> None:
    out = _run("sandbox", "exec", "--sandbox", "none", "--workdir", str(tmp_path), "--", "sh", "-c", "echo plain")
    assert out.returncode == 0 and out.stdout == "plain\n"
    log = json.loads(_run("audit", "log", "--json").stdout)
    assert log[-1]["rule_id"] == "sandbox.none"


def test_policy_list_show_lint_diff(tmp_path: Path) -> None:
    listed = json.loads(_run("policy", "list", "--json").stdout)
    assert {"strict", "default", "data-restricted"} <= {p["name"] for p in listed}
    shown = json.loads(_run("policy", "show", "default", "--json").stdout)
    assert shown["name"] == "default" and "api.anthropic.com" in shown["policy"]["network"]["allow"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlimits:\n  wall: 3\n")
    lint = _run("policy", "lint", str(bad))
    assert lint.returncode == 2 and f"{bad}:3: limits.wall: unknown key" in lint.stderr
    assert _run("policy", "lint", "strict").returncode == 0
    diff = json.loads(_run("policy", "diff", "strict", "default", "--json").stdout)
    assert any(d["field"] == "network.allow" for d in diff)
