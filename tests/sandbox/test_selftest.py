"""The self-test runs in CI: every check passes, and each one made audit records."""

from __future__ import annotations

import json
import subprocess

from loopmeter.policies.audit import count, verify_chain
from loopmeter.sandbox.selftest import run_selftest
from tests.conftest import loopmeter_cmd

EXPECTED = {"write-outside-workdir", "home-secret", "host-loopback", "egress-proxy", "dns", "capabilities",
            "fork-bomb", "cpu-and-wall-clock", "env-canary", "git-dirs-read-only", "git-pointer-not-followed"}


def test_every_selftest_check_passes_with_its_control(runner, store, audit) -> None:
    checks = run_selftest(runner, audit_count=lambda: count(store))
    table = "\n".join(f"{c.ok} {c.name}: {c.denial} / {c.control}" for c in checks)
    assert {c.name for c in checks} == EXPECTED, table
    assert all(c.ok for c in checks), table
    assert verify_chain(store, audit.anchor_path).ok


def test_sandbox_doctor_cli_prints_the_table_as_json() -> None:
    out = subprocess.run(loopmeter_cmd("sandbox", "doctor", "--json"), capture_output=True, text=True, timeout=120)
    data = json.loads(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert data["ok"] is True and data["runner"]["usable"] is True
    assert {c["name"] for c in data["checks"]} == EXPECTED
