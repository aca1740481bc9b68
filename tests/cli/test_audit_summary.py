"""`loopmeter audit summary RUN` and `loopmeter policy suggest RUN` on denials made by real sandboxed code.

The run is real: attacker-ish code in a bubblewrap sandbox asks the egress proxy for hosts the policy
does not allow, a local server, a metadata endpoint, a host an explicit rule denies, and is refused a
secret. The CLI then reads the real store; the suggested policy is loaded and run again in a sandbox.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from loopmeter.policies import load_policy, parse_policy
from loopmeter.policies.audit import AuditLog
from loopmeter.sandbox import make_runner
from loopmeter.store import Run
from tests.conftest import loopmeter_cmd
from tests.sandbox import conftest as sandbox_fixtures

POLICY = """\
name: review
network:
  allow: [models.test]
  ports: [443]
secrets:
  agent:attacker: [ANTHROPIC_API_KEY]
rules:
  - {id: no-blocked, action: connect, match: 'blocked.test:443', decision: deny, reason: blocked on purpose}
"""

ASK = r"""
import json, socket, sys
codes = []
for target in json.loads(sys.argv[1]):
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    codes.append(s.recv(4096).split(b" ", 2)[1].decode())
    s.close()
print(json.dumps(codes))
"""

FETCH = r"""
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode().strip())
"""


def _targets(port: int) -> list[str]:
    return (["evil.test:443"] * 5 + ["a.cdn.test:443", "b.cdn.test:443", "c.cdn.test:443", "models.test:8443",
             f"127.0.0.1:{port}", "169.254.169.254:80", "blocked.test:443", "models.test:443"])


host_server = sandbox_fixtures.host_server


@pytest.fixture
def runner(store, loopmeter_home: Path):
    return make_runner("bwrap", store=store, audit=AuditLog(store, loopmeter_home / "audit.anchor"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "review.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def denied_run(runner, policy_file: Path, workdir: Path, host_server: int) -> dict:
    """Run R1: agent:attacker asks for every target above and is refused OPENAI_API_KEY; agent:other asks once."""
    policy = load_policy(policy_file)
    res = runner.run(["python3", "-I", "-c", ASK, json.dumps(_targets(host_server))], workdir=workdir,
                     policy=policy, role="agent", actor="agent:attacker", run_id="R1",
                     secrets={"ANTHROPIC_API_KEY": "sk-a", "OPENAI_API_KEY": "sk-o"})
    assert res.exit_code == 0, res.stderr
    other = runner.run(["python3", "-I", "-c", ASK, json.dumps(["evil.test:443"])], workdir=workdir,
                       policy=policy, role="agent", actor="agent:other", run_id="R1")
    assert other.exit_code == 0, other.stderr
    return {"codes": json.loads(res.stdout), "port": host_server}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(loopmeter_cmd(*args), capture_output=True, text=True)


def test_audit_summary_counts_denials_per_kind_actor_and_target(denied_run: dict) -> None:
    port = denied_run["port"]
    assert denied_run["codes"] == ["403"] * 10 + ["403", "403", "502"]  # the unresolvable name is a 502
    res = _cli("audit", "summary", "R1", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    by = {(g["layer"], g["action"], g["target"], g["actor"], g["rule_id"]): g["count"] for g in data["denials"]}
    assert by[("proxy", "connect", "evil.test:443", "agent:attacker", "network.default-deny")] == 5
    assert by[("proxy", "connect", "evil.test:443", "agent:other", "network.default-deny")] == 1
    assert by[("proxy", "connect", f"127.0.0.1:{port}", "agent:attacker", "network.ip-literal")] == 1
    assert by[("proxy", "connect", "169.254.169.254:80", "agent:attacker", "network.metadata")] == 1
    assert by[("proxy", "connect", "blocked.test:443", "agent:attacker", "rules.no-blocked")] == 1
    assert by[("proxy", "connect", "models.test:8443", "agent:attacker", "network.ports")] == 1
    assert by[("proxy", "connect", "models.test:443", "agent:attacker", "network.dns")] == 1
    assert by[("policy", "env", "OPENAI_API_KEY", "agent:attacker", "secrets.not-for-actor")] == 1
    assert data["total"] == 15 == sum(by.values())
    assert data["by_kind"] == [{"layer": "proxy", "action": "connect", "count": 14},
                               {"layer": "policy", "action": "env", "count": 1}]
    assert data["by_actor"] == [{"actor": "agent:attacker", "count": 14}, {"actor": "agent:other", "count": 1}]
    # the 5 repeats to evil.test were 3 records and a summary: the count is still 5
    assert data["records"] < data["total"]
    text = _cli("audit", "summary", "R1")
    assert text.returncode == 0 and "15 denials" in text.stdout and "evil.test:443" in text.stdout
    assert "nothing denied" in _cli("audit", "summary", "no-such-run").stdout


def test_policy_suggest_proposes_the_narrowest_change_with_a_warning_for_each_widening(
        denied_run: dict, policy_file: Path, runner, workdir: Path, tmp_path: Path) -> None:
    port = denied_run["port"]
    before = policy_file.read_bytes()
    files_before = sorted(p.name for p in tmp_path.iterdir())
    res = _cli("policy", "suggest", "R1", "--policy", str(policy_file), "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    changes = {(c["field"], c["value"] if isinstance(c["value"], str) else c["value"]["match"]): c
               for c in s["changes"]}
    assert set(changes) == {
        ("network.allow", "evil.test"), ("network.allow", "a.cdn.test"), ("network.allow", "b.cdn.test"),
        ("network.allow", "c.cdn.test"), ("network.allow", "models.test:8443"),
        ("network.allow_local", f"127.0.0.1:{port}"), ("secrets.agent:attacker", "OPENAI_API_KEY"),
        ("rules", "blocked.test:443")}
    assert changes[("network.allow", "evil.test")]["denials"] == 6  # both actors: one host entry
    assert any("loopback" in w for w in changes[("network.allow_local", f"127.0.0.1:{port}")]["warnings"])
    assert any("'*.cdn.test'" in w and "every name" in w for w in changes[("network.allow", "a.cdn.test")]["warnings"])
    assert not any("*." in w for w in changes[("network.allow", "evil.test")]["warnings"])
    assert any("not in network.ports" in w for w in changes[("network.allow", "models.test:8443")]["warnings"])
    assert any("hands the secret OPENAI_API_KEY" in w for w in changes[("secrets.agent:attacker", "OPENAI_API_KEY")]["warnings"])
    assert any("overrides rule no-blocked" in w for w in changes[("rules", "blocked.test:443")]["warnings"])
    assert all(c["warnings"] for c in s["changes"])  # every change is a widening and says so
    notes = {n["rule_id"] for n in s["notes"]}
    assert notes == {"network.metadata", "network.dns"}
    assert s["unresolved"] == []
    assert s["policy_sha256"] == hashlib.sha256(before).hexdigest() and s["run_policy_sha256"] == [s["policy_sha256"]]

    # the suggestion is a valid policy that allows exactly what was denied, and not the rest
    suggested = parse_policy(s["suggested"], tmp_path / "suggested.yaml")
    for target, actor in [("evil.test:443", "agent:other"), ("c.cdn.test:443", "agent:attacker"),
                          ("models.test:8443", "agent:attacker"), (f"127.0.0.1:{port}", "agent:attacker"),
                          ("blocked.test:443", "agent:attacker")]:
        assert suggested.decide("connect", target, actor).allowed, target
    for target in ["d.cdn.test:443", "evil.test:8443", "127.0.0.1:1", "169.254.169.254:80", "other.test:443"]:
        assert not suggested.decide("connect", target, "agent:attacker").allowed, target
    assert not suggested.decide("connect", "blocked.test:443", "agent:other").allowed  # the rule is for one actor
    assert suggested.secrets_for("agent:attacker") == ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
    assert suggested.secrets_for("agent:other") == []

    # and run again under it, the sandboxed code reaches the host server it was denied
    url = f"http://127.0.0.1:{port}/"
    denied = runner.run(["python3", "-I", "-c", FETCH, url], workdir=workdir, policy=load_policy(policy_file),
                        role="agent", actor="agent:attacker")
    assert denied.exit_code != 0
    (tmp_path / "suggested.yaml").write_text(s["suggested"])
    allowed = runner.run(["python3", "-I", "-c", FETCH, url], workdir=workdir,
                         policy=load_policy(tmp_path / "suggested.yaml"), role="agent", actor="agent:attacker")
    assert allowed.exit_code == 0 and allowed.stdout.strip() == "hello from the host", allowed.stderr

    # it never applies anything
    assert policy_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*files_before, "suggested.yaml"])
    text = _cli("policy", "suggest", "R1", "--policy", str(policy_file))
    assert text.returncode == 0
    assert text.stdout.count("WARNING:") >= len(s["changes"])
    assert "\n+  - evil.test\n" in text.stdout and "+++ review + suggestion for R1" in text.stdout
    assert "nothing was written" in text.stdout


def test_policy_suggest_finds_the_policy_the_run_used_and_warns_when_it_changed(
        store, runner, policy_file: Path, workdir: Path, host_server: int) -> None:
    policy = load_policy(policy_file)
    store.save(Run(id="R2", policy=policy.name, policy_sha256=policy.sha256,
                   config=json.dumps({"policy_ref": str(policy_file)})))
    res = runner.run(["python3", "-I", "-c", ASK, json.dumps(["evil.test:443"])], workdir=workdir, policy=policy,
                     role="agent", actor="agent:attacker", run_id="R2")
    assert res.exit_code == 0, res.stderr
    found = json.loads(_cli("policy", "suggest", "R2", "--json").stdout)
    assert found["policy_path"] == str(policy_file) and found["policy_sha256"] == policy.sha256
    policy_file.write_text(POLICY + "description: edited after the run\n")
    changed = _cli("policy", "suggest", "R2")
    assert changed.returncode == 0 and "WARNING: the run's records name policy sha256" in changed.stdout


def test_policy_suggest_recognises_a_preset_by_its_sha256(runner, workdir: Path) -> None:
    res = runner.run(["python3", "-I", "-c", ASK, json.dumps(["evil.test:443", "pypi.org:8080"])], workdir=workdir,
                     policy="default", role="agent", actor="agent:claude-code", run_id="R3")
    assert res.exit_code == 0, res.stderr
    s = json.loads(_cli("policy", "suggest", "R3", "--json").stdout)
    assert s["policy_name"] == "default"
    assert {c["value"] for c in s["changes"]} == {"evil.test", "pypi.org:8080"}
    missing = _cli("policy", "suggest", "no-such-run")
    assert missing.returncode != 0 and "--policy" in missing.stderr
