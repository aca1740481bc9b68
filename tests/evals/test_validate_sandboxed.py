"""`eval validate` runs a task's check like every other check: in bubblewrap, role "check", no keys.

The hostile task's check tries to write a marker file on the host (outside its worktree) and
prints the API key it can see. Sandboxed, the marker is never made and no key is seen; with
`--sandbox none` (asked for by name) the marker *is* made, which proves the probe works, and
every such command is warned about on stderr and audited.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from loopmeter.evals.validate import validate_task
from loopmeter.tasks import load_task
from tests.conftest import loopmeter_cmd

CANARY = "sk-ant-canary-must-not-reach-a-check"


def hostile_task(root: Path, marker: Path) -> Path:
    """A valid task (solution passes, bare fails) whose check also attacks the host."""
    task = root / "hostile"
    (task / "repo").mkdir(parents=True)
    (task / "repo" / "answer.txt").write_text("wrong\n")
    (task / "solution").mkdir()
    (task / "solution" / "answer.txt").write_text("right\n")
    (task / "tests").mkdir()
    (task / "tests" / "check.sh").write_text(
        f'echo pwned >> {marker} 2>/dev/null\n'
        'echo "KEY=${ANTHROPIC_API_KEY:-none}"\n'
        'grep -q right answer.txt\n')
    (task / "task.toml").write_text('id = "hostile"\ninstruction = "x"\ncheck = "sh tests/check.sh"\n')
    return task


def cli(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOOPMETER_HOME": str(home), "ANTHROPIC_API_KEY": CANARY}
    return subprocess.run(loopmeter_cmd(*args), capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


def audit_rows(home: Path) -> list[dict]:
    out = cli(home, "audit", "log", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_validate_runs_the_check_in_the_sandbox_without_keys(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    marker = tmp_path / "host-marker"
    result = validate_task(load_task(hostile_task(tmp_path, marker)))
    assert result.ok, result.output
    assert "KEY=none" in result.output and CANARY not in result.output
    assert not marker.exists()


def test_cli_validate_is_sandboxed_by_default_and_audited(tmp_path: Path, loopmeter_home: Path) -> None:
    marker = tmp_path / "host-marker"
    task = hostile_task(tmp_path, marker)
    out = cli(loopmeter_home, "eval", "validate", str(task), "--json")
    assert out.returncode == 0, out.stderr
    assert [r["task_id"] for r in json.loads(out.stdout) if r["ok"]] == ["hostile"]
    assert not marker.exists()
    assert "WITHOUT a sandbox" not in out.stderr
    checks = [r for r in audit_rows(loopmeter_home) if r["actor"] == "check" and r["action"] == "exec"]
    assert len(checks) == 2 and all(json.loads(r["detail"])["runner"] == "bwrap" for r in checks)


def test_cli_validate_sandbox_none_warns_for_every_command_and_audits_it(tmp_path: Path,
                                                                         loopmeter_home: Path) -> None:
    marker = tmp_path / "host-marker"
    task = hostile_task(tmp_path, marker)
    out = cli(loopmeter_home, "eval", "validate", str(task), "--sandbox", "none", "--json")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "running WITHOUT a sandbox" in line]
    assert len(warnings) == 2 and all("tests/check.sh" in w for w in warnings)  # bare check + solved check
    assert marker.read_text() == "pwned\npwned\n"  # the probe works: unsandboxed, the host write happens
    none_rows = [r for r in audit_rows(loopmeter_home) if r["rule_id"] == "sandbox.none"]
    assert len(none_rows) == 2 and all(json.loads(r["detail"])["sandboxed"] is False for r in none_rows)


def test_cli_validate_rejects_an_unknown_sandbox(tmp_path: Path, loopmeter_home: Path) -> None:
    out = cli(loopmeter_home, "eval", "validate", str(hostile_task(tmp_path, tmp_path / "m")), "--sandbox", "host")
    assert out.returncode == 2 and "unknown sandbox 'host'" in out.stderr and "--sandbox bwrap" in out.stderr


def test_a_solve_script_that_plants_a_tests_link_fails_validation_without_touching_the_host(
        tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep.txt").write_text("host\n")
    task = hostile_task(tmp_path, tmp_path / "m")
    (task / "solution" / "answer.txt").unlink()
    (task / "solution" / "solve.sh").write_text(f"echo right > answer.txt\nln -s {host} tests\n")
    result = validate_task(load_task(task))
    assert not result.ok and "is a symbolic link" in result.output
    assert sorted(p.name for p in host.iterdir()) == ["keep.txt"]  # check.sh was not copied into the host folder
