"""The bubblewrap runner against real bubblewrap, real git repos and real loopback HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from loopmeter.policies import load_policy, parse_policy
from loopmeter.sandbox import make_runner
from loopmeter.store import Audit
from tests.sandbox.conftest import git

CHECK = {"role": "check", "actor": "check"}


def _audit_rows(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(Audit.__table__).order_by(Audit.__table__.c.seq))]


def test_argv_is_deterministic_and_carries_the_isolation_flags(runner, workdir: Path) -> None:
    policy = load_policy("strict")
    spec_a, _, _ = runner.build(["true"], workdir=workdir, policy=policy, role="check", actor="check")
    spec_b, _, _ = runner.build(["true"], workdir=workdir, policy=policy, role="check", actor="check")
    from loopmeter.sandbox.spec import bwrap_argv

    a, b = bwrap_argv(spec_a, ["true"]), bwrap_argv(spec_b, ["true"])
    assert a == b
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in a
    assert a[a.index("--cap-drop") + 1] == "ALL"
    assert ["--bind", str(workdir), str(workdir)] == a[a.index(str(workdir)) - 1: a.index(str(workdir)) + 2]


def test_exit_code_output_and_exec_audit_record(runner, store, workdir: Path) -> None:
    res = runner.run(["sh", "-c", "echo out; echo err >&2; exit 7"], workdir=workdir, policy=load_policy("strict"),
                     run_id="R1", **CHECK)
    assert (res.exit_code, res.stdout, res.stderr) == (7, "out\n", "err\n")
    rows = _audit_rows(store)
    assert rows[-1]["action"] == "exec" and rows[-1]["decision"] == "allow" and rows[-1]["run_id"] == "R1"
    assert rows[-1]["policy_sha256"] == load_policy("strict").sha256


def test_policy_denied_command_does_not_run_and_is_audited(runner, store, workdir: Path) -> None:
    res = runner.run(["git", "push", "origin", "main"], workdir=workdir, policy=load_policy("default"), **CHECK)
    assert res.exit_code == 126 and res.denials[0]["rule_id"] == "rules.no-git-push"
    assert _audit_rows(store)[-1]["decision"] == "deny"


def test_secrets_reach_only_the_agent_the_policy_names(runner, store, workdir: Path) -> None:
    policy = load_policy("default")
    secrets = {"ANTHROPIC_API_KEY": "sk-ant-test-1", "OPENAI_API_KEY": "sk-oai-test-2"}
    agent = runner.run(["env"], workdir=workdir, policy=policy, role="agent", actor="agent:claude-code",
                       secrets=secrets)
    assert "ANTHROPIC_API_KEY=sk-ant-test-1" in agent.stdout and "sk-oai-test-2" not in agent.stdout
    check = runner.run(["env"], workdir=workdir, policy=policy, role="check", actor="check", secrets=secrets)
    assert "sk-ant-test-1" not in check.stdout and "sk-oai-test-2" not in check.stdout
    assert {d["target"] for d in check.denials} == {"ANTHROPIC_API_KEY", "OPENAI_API_KEY"}
    stored = json.dumps([{k: str(v) for k, v in r.items()} for r in _audit_rows(store)])
    assert "sk-ant-test-1" not in stored and "sk-oai-test-2" not in stored


def test_git_repo_is_usable_but_hooks_and_config_are_read_only(runner, repo: Path) -> None:
    (repo / "a.txt").write_text("two\n")
    res = runner.run(["sh", "-c", "git diff --stat; echo x > .git/hooks/pre-commit || echo HOOK-RO; "
                                  "echo x >> .git/config || echo CONFIG-RO; echo new > b.txt"],
                     workdir=repo, policy=load_policy("strict"), **CHECK)
    assert "a.txt" in res.stdout and "HOOK-RO" in res.stdout and "CONFIG-RO" in res.stdout
    assert (repo / "b.txt").read_text() == "new\n"
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()


def test_linked_worktree_can_diff_inside(runner, repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "attempt-1", str(wt))
    (wt / "a.txt").write_text("changed in worktree\n")
    res = runner.run(["git", "diff"], workdir=wt, policy=load_policy("strict"), **CHECK)
    assert res.exit_code == 0, res.stderr
    assert "+changed in worktree" in res.stdout


def test_timeout_kills_the_whole_tree_with_exit_124(runner, store, workdir: Path) -> None:
    res = runner.run(["sh", "-c", "sleep 4117 & sleep 4117"], workdir=workdir, policy=load_policy("strict"),
                     timeout_s=0.5, **CHECK)
    assert res.exit_code == 124 and res.timed_out and res.killed_reason == "timeout"
    import subprocess

    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 4117" not in ps
    assert _audit_rows(store)[-1]["rule_id"] == "limits.wall_s"


def test_output_limit_kills_a_flood(runner, workdir: Path, tmp_path: Path) -> None:
    policy = parse_policy("name: small\nlimits: {output_kb: 64}\n", tmp_path / "small.yaml")
    res = runner.run(["sh", "-c", "yes flood"], workdir=workdir, policy=policy, timeout_s=20, **CHECK)
    assert res.killed_reason == "output" and len(res.stdout) <= 64 * 1024


def test_proxy_allows_listed_local_endpoint_and_403s_others_with_audit(runner, store, workdir: Path,
                                                                       host_server: int) -> None:
    code = ("import urllib.request as u, urllib.error as e\n"
            f"print(u.urlopen('http://127.0.0.1:{host_server}/').read().decode().strip())\n"
            "try: u.urlopen('http://not-allowed.example/')\n"
            "except e.HTTPError as x: print(x.code, x.read().decode().strip())\n")
    res = runner.run(["python3", "-c", code], workdir=workdir, policy=load_policy("default"),
                     extra_allow=[f"127.0.0.1:{host_server}"], **CHECK)
    assert "hello from the host" in res.stdout
    assert "403 loopmeter egress proxy denied not-allowed.example:80" in res.stdout
    proxy_rows = [r for r in _audit_rows(store) if r["layer"] == "proxy"]
    by_target = {r["target"]: r for r in proxy_rows}
    allowed = by_target[f"127.0.0.1:{host_server}"]
    assert allowed["decision"] == "allow" and json.loads(allowed["detail"])["bytes_down"] > 0
    assert by_target["not-allowed.example:80"]["decision"] == "deny"


def test_local_endpoint_url_works_unchanged_inside_without_proxy_support(runner, store, workdir: Path,
                                                                         host_server: int) -> None:
    # a client that ignores HTTP_PROXY (like node's fetch) still reaches the allowed host port
    code = ("import urllib.request as u\n"
            "o = u.build_opener(u.ProxyHandler({}))\n"
            f"print(o.open('http://127.0.0.1:{host_server}/').read().decode().strip())\n")
    policy = parse_policy(f"name: local\nnetwork:\n  allow_local: ['127.0.0.1:{host_server}']\n",
                          Path("local.yaml"))
    res = runner.run(["python3", "-c", code], workdir=workdir, policy=policy, **CHECK)
    assert res.stdout.strip() == "hello from the host", res.stderr
    assert any(r["layer"] == "proxy" and r["rule_id"] == "network.allow_local" for r in _audit_rows(store))


def test_strict_policy_has_no_proxy_at_all(runner, workdir: Path) -> None:
    res = runner.run(["sh", "-c", "env | grep -i proxy || echo NO-PROXY"], workdir=workdir,
                     policy=load_policy("strict"), **CHECK)
    assert res.stdout.strip() == "NO-PROXY"


def test_unsandboxed_runner_only_by_name_and_audited(store, audit, workdir: Path) -> None:
    runner = make_runner("none", store=store, audit=audit)
    res = runner.run(["sh", "-c", "echo hi > made.txt; echo ok"], workdir=workdir, policy=load_policy("strict"),
                     **CHECK)
    assert res.stdout == "ok\n" and (workdir / "made.txt").exists()
    row = _audit_rows(store)[-1]
    assert row["rule_id"] == "sandbox.none" and json.loads(row["detail"])["sandboxed"] is False


def test_private_home_is_writable_and_kept(runner, workdir: Path, tmp_path: Path) -> None:
    home = tmp_path / "agent-home"
    home.mkdir()
    res = runner.run(["sh", "-c", "echo $HOME; echo state > $HOME/.agent-state"], workdir=workdir,
                     policy=load_policy("strict"), home=home, **CHECK)
    assert res.stdout.strip() == str(home.resolve())
    assert (home / ".agent-state").read_text() == "state\n"


def test_a_key_passed_as_plain_env_is_stripped_for_the_check(runner, workdir: Path) -> None:
    res = runner.run(["env"], workdir=workdir, policy=load_policy("default"), env={"OPENAI_API_KEY": "sk-leak",
                                                                                  "FOO": "bar"}, **CHECK)
    assert "sk-leak" not in res.stdout and "FOO=bar" in res.stdout
    assert any(d["target"] == "OPENAI_API_KEY" for d in res.denials)


def test_stdin_streaming_output_and_cancel(runner, workdir: Path) -> None:
    import threading

    lines: list[tuple[str, str]] = []
    res = runner.run(["sh", "-c", "read x; echo got $x; echo warn >&2"], workdir=workdir,
                     policy=load_policy("strict"), stdin="abc\n", on_output=lambda s, ln: lines.append((s, ln)), **CHECK)
    assert res.stdout == "got abc\n" and ("stdout", "got abc") in lines and ("stderr", "warn") in lines
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    res = runner.run(["sleep", "30"], workdir=workdir, policy=load_policy("strict"), cancel=cancel, **CHECK)
    assert res.killed_reason == "cancelled" and res.wall_s < 10 and not res.timed_out


def test_file_size_limit_stops_a_big_write(runner, workdir: Path, tmp_path: Path) -> None:
    policy = parse_policy("name: fs\nlimits: {file_size_mb: 1}\n", tmp_path / "fs.yaml")
    res = runner.run(["sh", "-c", "exec head -c 3000000 /dev/zero > big.bin"], workdir=workdir, policy=policy, **CHECK)
    assert res.killed_reason == "file_size" and (workdir / "big.bin").stat().st_size == 1024 * 1024
    assert res.denials[-1]["rule_id"] == "limits.file_size_mb"


def test_loopmeter_home_is_hidden_even_inside_a_writable_dir(runner, tmp_path: Path, loopmeter_home: Path) -> None:
    # the store and the audit anchor must be out of reach even when the workdir contains them
    outer = loopmeter_home.parent
    (loopmeter_home / "audit.anchor").write_text('{"seq": 0, "hash": "x"}\n')
    res = runner.run(["sh", "-c", f"ls {loopmeter_home}; echo tamper > {loopmeter_home}/audit.anchor || echo RO"],
                     workdir=outer, policy=load_policy("strict"), **CHECK)
    assert "RO" in res.stdout and "audit.anchor" not in res.stdout
    assert "tamper" not in (loopmeter_home / "audit.anchor").read_text()


def test_missing_command_is_127_and_a_broken_sandbox_is_125(runner, workdir: Path, tmp_path: Path) -> None:
    res = runner.run(["no-such-command-xyz"], workdir=workdir, policy=load_policy("strict"), **CHECK)
    assert res.exit_code == 127
    res = runner.run(["true"], workdir=workdir, policy=load_policy("strict"),
                     extra_rw_binds=[tmp_path / "does-not-exist"], **CHECK)
    assert res.exit_code == 125 and res.killed_reason == "start"


def test_parallel_commands_each_get_their_own_sandbox_and_one_audit_chain(runner, store, audit, tmp_path: Path,
                                                                          host_server: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from loopmeter.policies.audit import verify_chain

    def one(i: int):
        wd = tmp_path / f"w{i}"
        wd.mkdir()
        code = (f"import urllib.request as u\nprint(u.urlopen('http://127.0.0.1:{host_server}/').read().decode())\n"
                f"open('mine.txt','w').write('{i}')")
        return wd, runner.run(["python3", "-c", code], workdir=wd, policy=load_policy("default"),
                              extra_allow=[f"127.0.0.1:{host_server}"], attempt_id=f"a{i}", **CHECK)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    for i, (wd, res) in enumerate(results):
        assert res.exit_code == 0 and "hello from the host" in res.stdout, res.stderr
        assert (wd / "mine.txt").read_text() == str(i)
    assert verify_chain(store, audit.anchor_path).ok
    assert {r["attempt_id"] for r in _audit_rows(store) if r["layer"] == "proxy"} == {"a0", "a1", "a2", "a3"}


def test_a_policy_requiring_isolation_refuses_the_unsandboxed_runner(store, audit, workdir: Path) -> None:
    runner = make_runner("none", store=store, audit=audit)
    res = runner.run(["sh", "-c", "echo ran > ran.txt"], workdir=workdir, policy=load_policy("data-restricted"),
                     **CHECK)
    assert res.exit_code == 125 and not (workdir / "ran.txt").exists()
    assert _audit_rows(store)[-1]["rule_id"] == "requires"
