"""The launcher that applies limits works with and without a cgroup (CI machines differ)."""

from __future__ import annotations

import subprocess

from loopmeter.policies.schema import Limits
from loopmeter.sandbox.limits import launcher_argv, make_cgroup


def test_launcher_without_a_cgroup_runs_the_command_with_rlimits() -> None:
    argv = launcher_argv(Limits(cpu_s=7, file_size_mb=1), None) + ["sh", "-c", "ulimit -t; ulimit -f"]
    out = subprocess.run(argv, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["7", "2048"]


def test_launcher_with_a_cgroup_joins_it_before_exec() -> None:
    cg = make_cgroup(Limits(pids=50, memory_mb=256))
    if cg is None:
        import pytest

        pytest.skip("no writable cgroup here; the runner falls back to rlimits")
    try:
        argv = launcher_argv(Limits(pids=50, memory_mb=256), cg) + ["cat", "/proc/self/cgroup"]
        out = subprocess.run(argv, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        name = next(iter(cg.dirs.values())).name
        assert name in out.stdout
    finally:
        cg.remove()


def test_runner_without_cgroups_still_runs_and_enforces_cpu(runner, workdir, tmp_path, monkeypatch) -> None:
    from loopmeter.policies import parse_policy

    monkeypatch.setenv("LOOPMETER_SANDBOX_CGROUP", "0")
    policy = parse_policy("name: nocg\nlimits: {cpu_s: 1}\n", tmp_path / "nocg.yaml")
    ok = runner.run(["sh", "-c", "echo fine"], workdir=workdir, policy=policy, role="check", actor="check")
    assert ok.exit_code == 0 and ok.stdout == "fine\n"
    burn = runner.run(["sh", "-c", "while :; do :; done"], workdir=workdir, policy=policy, role="check",
                      actor="check", timeout_s=30)
    assert burn.killed_reason == "cpu"
