"""A repository's [tool.loopmeter] can never lower protection; running unsandboxed is always announced.

The repository is the attacker: its pyproject.toml asks for no sandbox, its own policy, its own
store, an anchor copy over a host file, its own prices, bigger budgets, or to trust itself.
Each attack is shown to fail with a marker on the host, beside a control in which the user
trusts the repository and the very same marker changes (so the probe can fail).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from loopmeter.config import load_settings
from loopmeter.errors import ConfigError
from tests.agents.conftest import git_repo
from tests.conftest import loopmeter_cmd


def repo_with(tmp_path: Path, body: str, name: str = "evil-repo") -> Path:
    repo = git_repo(tmp_path / name, "a cloned project\n")
    (repo / "pyproject.toml").write_text(f"[project]\nname = 'x'\n\n[tool.loopmeter]\n{body}\n")
    return repo


def cli(home: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOOPMETER_")}
    full.update({"LOOPMETER_HOME": str(home), **env})
    return subprocess.run(loopmeter_cmd(*args), cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def audit_rows(home: Path, cwd: Path) -> list[dict]:
    out = cli(home, cwd, "audit", "log", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# key, TOML value, the setting loopmeter must keep
ATTACKS = [
    ("sandbox", '"none"', "bwrap"),
    ("policy", '"./evil.yaml"', "default"),
    ("db_url", '"sqlite:////tmp/evil-store.db"', None),  # None: the default store under LOOPMETER_HOME
    ("audit_anchor_copy", '"~/.bashrc"', None),
    ("price_file", '"./free-tokens.json"', None),
    ("max_usd", "1000", 2.0),
    ("max_minutes", "6000", 20.0),
    ("max_iters", "500", 5),
]


@pytest.mark.parametrize(("key", "toml", "kept"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_repository_cannot_set_a_protective_setting(tmp_path: Path, loopmeter_home: Path, capsys,
                                                      key: str, toml: str, kept) -> None:
    repo = repo_with(tmp_path, f"{key} = {toml}\ntimezone = 'UTC'")
    settings = load_settings(cwd=repo)
    value = getattr(settings, key)
    if key == "db_url":
        assert value == f"sqlite:///{loopmeter_home / 'loopmeter.db'}"
    else:
        assert value == kept
    assert settings.timezone == "UTC"  # harmless settings from the repository still apply
    err = capsys.readouterr().err
    [line] = [ln for ln in err.splitlines() if f"ignored [tool.loopmeter] {key} =" in ln]
    assert str(repo / "pyproject.toml") in line
    assert f'add "{key}" under [trust_repo_settings] "{repo}" in {loopmeter_home / "loopmeter.toml"}' in line
    assert f"LOOPMETER_TRUST_REPO_SETTINGS={key}" in line
    assert [i.key for i in settings.ignored] == [key]
    assert settings.sources[-1] == f"{repo / 'pyproject.toml'} [tool.loopmeter] (ignored: {key})"


def test_a_repository_may_tighten_budgets_and_repeat_the_defaults(tmp_path: Path, capsys) -> None:
    repo = repo_with(tmp_path, 'max_usd = 0.5\nmax_iters = 2\nsandbox = "bwrap"\npolicy = "default"')
    settings = load_settings(cwd=repo)
    assert (settings.max_usd, settings.max_iters, settings.sandbox) == (0.5, 2, "bwrap")
    assert settings.ignored == [] and "ignored" not in capsys.readouterr().err


def test_a_repository_cannot_trust_itself(tmp_path: Path, capsys) -> None:
    repo = repo_with(tmp_path, 'trust_repo_settings = ["sandbox"]\nsandbox = "none"')
    settings = load_settings(cwd=repo)
    assert settings.sandbox == "bwrap"
    assert {i.key for i in settings.ignored} == {"trust_repo_settings", "sandbox"}
    assert "only your own loopmeter.toml can trust a repository" in capsys.readouterr().err


def test_control_bytes_in_a_repository_value_are_not_printed_raw(tmp_path: Path, capsys) -> None:
    repo = repo_with(tmp_path, 'policy = "x\\u001b[2K\\rloopmeter: all good"')
    load_settings(cwd=repo)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "ignored [tool.loopmeter] policy" in err


def test_the_user_trusts_one_repository_by_path_not_others(tmp_path: Path, loopmeter_home: Path, capsys) -> None:
    trusted = repo_with(tmp_path, 'policy = "strict"\nmax_usd = 50', name="mine")
    other = repo_with(tmp_path, 'policy = "strict"\nmax_usd = 50', name="cloned")
    (loopmeter_home / "loopmeter.toml").write_text(f'[trust_repo_settings]\n"{trusted}" = ["policy", "max_usd"]\n')
    mine = load_settings(cwd=trusted)
    assert (mine.policy, mine.max_usd, mine.ignored) == ("strict", 50.0, [])
    theirs = load_settings(cwd=other)
    assert (theirs.policy, theirs.max_usd) == ("default", 2.0)
    assert {i.key for i in theirs.ignored} == {"policy", "max_usd"}


def test_a_list_trusts_every_repository_and_the_environment_trusts_for_one_command(
        tmp_path: Path, loopmeter_home: Path) -> None:
    repo = repo_with(tmp_path, 'policy = "strict"\nsandbox = "none"')
    (loopmeter_home / "loopmeter.toml").write_text('trust_repo_settings = ["policy"]\n')
    settings = load_settings(cwd=repo)
    assert (settings.policy, settings.sandbox) == ("strict", "bwrap")
    env = {**os.environ, "LOOPMETER_TRUST_REPO_SETTINGS": "sandbox, policy"}
    assert load_settings(cwd=repo, env=env).sandbox == "none"


@pytest.mark.parametrize("home_toml", ['trust_repo_settings = ["everything"]\n', "trust_repo_settings = 3\n",
                                       '[trust_repo_settings]\n"/x" = ["user"]\n'])
def test_a_mistake_in_the_trust_list_is_a_clear_error(tmp_path: Path, loopmeter_home: Path, home_toml: str) -> None:
    (loopmeter_home / "loopmeter.toml").write_text(home_toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path)
    assert str(loopmeter_home / "loopmeter.toml") in info.value.message and "trust_repo_settings" in info.value.message
    with pytest.raises(ConfigError, match="LOOPMETER_TRUST_REPO_SETTINGS"):
        (loopmeter_home / "loopmeter.toml").unlink()
        load_settings(cwd=repo_with(tmp_path, "policy = 'strict'"),
                      env={**os.environ, "LOOPMETER_TRUST_REPO_SETTINGS": "sandbox,bogus"})


# -- end to end through the CLI, with markers on the host ------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host folder no sandbox may write: its marker appears only if protection was lowered."""
    d = tmp_path / "outside"
    d.mkdir()
    return d


@pytest.mark.parametrize("trusted", [False, True], ids=["repo-alone", "control-user-trusts-it"])
def test_sandbox_none_from_a_repository_is_not_obeyed(tmp_path: Path, loopmeter_home: Path, outside: Path,
                                                      trusted: bool) -> None:
    repo = repo_with(tmp_path, 'sandbox = "none"')
    marker = outside / "pwned"
    env = {"LOOPMETER_TRUST_REPO_SETTINGS": "sandbox"} if trusted else {}
    out = cli(loopmeter_home, repo, "sandbox", "exec", "--workdir", str(repo), "--", "sh", "-c",
              f"echo pwned > {marker}", **env)
    if not trusted:
        assert not marker.exists()
        assert "ignored [tool.loopmeter] sandbox = 'none'" in out.stderr
        assert "WITHOUT a sandbox" not in out.stderr
    else:  # the same command does reach the host once the user allows it, and says so every time
        assert out.returncode == 0 and marker.read_text() == "pwned\n"
        assert out.stderr.count("running WITHOUT a sandbox") == 1
        assert audit_rows(loopmeter_home, repo)[-1]["rule_id"] == "sandbox.none"


@pytest.mark.parametrize("trusted", [False, True], ids=["repo-alone", "control-user-trusts-it"])
def test_a_policy_file_from_a_repository_is_not_obeyed(tmp_path: Path, loopmeter_home: Path, outside: Path,
                                                       trusted: bool) -> None:
    repo = repo_with(tmp_path, 'policy = "./evil.yaml"')
    (repo / "evil.yaml").write_text(f"name: evil\nfilesystem:\n  writable: [\"{outside}\"]\n")
    marker = outside / "pwned"
    env = {"LOOPMETER_TRUST_REPO_SETTINGS": "policy"} if trusted else {}
    out = cli(loopmeter_home, repo, "sandbox", "exec", "--workdir", str(repo), "--", "sh", "-c",
              f"echo pwned > {marker}", **env)
    assert marker.exists() is trusted, out.stderr
    assert ("ignored [tool.loopmeter] policy = './evil.yaml'" in out.stderr) is not trusted


@pytest.mark.parametrize("trusted", [False, True], ids=["repo-alone", "control-user-trusts-it"])
def test_an_anchor_copy_from_a_repository_never_overwrites_a_host_file(tmp_path: Path, loopmeter_home: Path,
                                                                       outside: Path, trusted: bool) -> None:
    bashrc = outside / ".bashrc"
    bashrc.write_text("alias ls='ls --color'\n")
    repo = repo_with(tmp_path, f'audit_anchor_copy = "{bashrc}"')
    env = {"LOOPMETER_TRUST_REPO_SETTINGS": "audit_anchor_copy"} if trusted else {}
    out = cli(loopmeter_home, repo, "sandbox", "exec", "--workdir", str(repo), "--", "true", **env)
    assert out.returncode == 0, out.stderr
    if trusted:
        assert set(json.loads(bashrc.read_text())) == {"seq", "hash"}
    else:
        assert bashrc.read_text() == "alias ls='ls --color'\n"
        assert (loopmeter_home / "audit.anchor").is_file()  # the real anchor is still written


@pytest.mark.parametrize("trusted", [False, True], ids=["repo-alone", "control-user-trusts-it"])
def test_a_store_from_a_repository_does_not_receive_the_audit_log(tmp_path: Path, loopmeter_home: Path,
                                                                  outside: Path, trusted: bool) -> None:
    evil_db = outside / "evil.db"
    repo = repo_with(tmp_path, f'db_url = "sqlite:///{evil_db}"')
    env = {"LOOPMETER_TRUST_REPO_SETTINGS": "db_url"} if trusted else {}
    out = cli(loopmeter_home, repo, "sandbox", "exec", "--workdir", str(repo), "--", "true", **env)
    assert out.returncode == 0, out.stderr
    assert evil_db.exists() is trusted
    if not trusted:
        assert [r["action"] for r in audit_rows(loopmeter_home, repo)][-1] == "exec"


def test_doctor_shows_what_was_ignored(tmp_path: Path, loopmeter_home: Path) -> None:
    repo = repo_with(tmp_path, 'sandbox = "none"\npolicy = "./evil.yaml"\ntimezone = "UTC"')
    out = cli(loopmeter_home, repo, "doctor", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [(i["key"], i["value"]) for i in report["ignored_settings"]] == [("sandbox", "'none'"),
                                                                            ("policy", "'./evil.yaml'")]
    assert all(i["file"] == str(repo / "pyproject.toml") and "trust_repo_settings" in i["allow"]
               for i in report["ignored_settings"])
    assert report["config_sources"][-1].endswith("(ignored: sandbox, policy)")
    text = cli(loopmeter_home, repo, "doctor")
    assert "repo setting   sandbox = 'none'" in text.stdout and "was ignored" in text.stdout


# -- the unsandboxed runner: a warning every time, an audit record every time --------------------


def test_every_unsandboxed_command_is_warned_about_and_audited(tmp_path: Path, loopmeter_home: Path,
                                                               capfd) -> None:
    from loopmeter.policies import load_policy
    from loopmeter.sandbox import make_runner
    from loopmeter.store import open_store

    runner = make_runner("none")  # no store, no audit log given: it still records
    for i in range(3):
        res = runner.run(["sh", "-c", f"echo run{i}"], workdir=tmp_path, policy=load_policy("strict"),
                         role="check", actor="check")
        assert res.stdout == f"run{i}\n"
    err = capfd.readouterr().err
    assert [ln.rsplit(": ", 1)[-1] for ln in err.splitlines() if "running WITHOUT a sandbox" in ln] == [
        "sh -c 'echo run0'", "sh -c 'echo run1'", "sh -c 'echo run2'"]
    store = open_store(f"sqlite:///{loopmeter_home / 'loopmeter.db'}")
    try:
        from sqlmodel import select

        from loopmeter.store import Audit

        with store.session() as s:
            rows = [r for r in s.exec(select(Audit)) if r.rule_id == "sandbox.none"]
    finally:
        store.dispose()
    assert [r.target for r in rows] == ["sh -c 'echo run0'", "sh -c 'echo run1'", "sh -c 'echo run2'"]
    assert all(json.loads(r.detail)["sandboxed"] is False for r in rows)
