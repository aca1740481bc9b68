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
