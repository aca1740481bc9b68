import json
import os
import pathlib
import subprocess
import textwrap

import pytest

from loopmeter import __version__
from tests.conftest import loopmeter_cmd

SECRET = "sk-ant-test-DO-NOT-PRINT-4f9c2b7e"

KEYRING_BACKEND = textwrap.dedent(
    """
    import json, os
    from keyring.backend import KeyringBackend

    class FileKeyring(KeyringBackend):
        '''A real keyring backend (keyring's plugin API) that keeps secrets in one JSON file.'''
        priority = 1

        def _load(self):
            path = os.environ["TEST_KEYRING_FILE"]
            return json.load(open(path)) if os.path.exists(path) else {}

        def set_password(self, service, username, password):
            data = self._load(); data[f"{service}/{username}"] = password
            json.dump(data, open(os.environ["TEST_KEYRING_FILE"], "w"))

        def get_password(self, service, username):
            return self._load().get(f"{service}/{username}")

        def delete_password(self, service, username):
            from keyring.errors import PasswordDeleteError
            data = self._load()
            if f"{service}/{username}" not in data:
                raise PasswordDeleteError("absent")
            del data[f"{service}/{username}"]
            json.dump(data, open(os.environ["TEST_KEYRING_FILE"], "w"))
    """
)


def run(args, env, stdin=None):
    return subprocess.run(loopmeter_cmd(*args), env=env, input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture
def keyring_env(tmp_path):
    (tmp_path / "testkr.py").write_text(KEYRING_BACKEND)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}",
               PYTHON_KEYRING_BACKEND="testkr.FileKeyring", TEST_KEYRING_FILE=str(tmp_path / "kr.json"))
    return env


def test_version():
    out = run(["--version"], dict(os.environ))
    assert out.returncode == 0 and out.stdout.strip() == f"loopmeter {__version__}"


def test_auth_set_list_delete_never_prints_the_secret(keyring_env, loopmeter_home):
    out = run(["auth", "set", "anthropic", "--stdin"], keyring_env, stdin=SECRET + "\n")
    assert out.returncode == 0, out.stderr
    listed = run(["auth", "list", "--json"], keyring_env)
    doc = run(["doctor", "--json"], keyring_env)
    for step in (out, listed, doc):
        assert SECRET not in step.stdout + step.stderr
    keys = {k["provider"]: k for k in json.loads(listed.stdout)["keys"]}
    assert keys["anthropic"]["present"] and keys["anthropic"]["where"] == "keyring"
    assert not keys["openai"]["present"]
    # stored in the keyring, and nowhere in loopmeter's home (the store included)
    assert SECRET in pathlib.Path(keyring_env["TEST_KEYRING_FILE"]).read_text()
    for path in loopmeter_home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    deleted = run(["auth", "delete", "anthropic"], keyring_env)
    assert deleted.returncode == 0
    again = run(["auth", "delete", "anthropic"], keyring_env)
    assert again.returncode == 2 and "no anthropic key" in again.stderr and "Traceback" not in again.stderr


def test_auth_without_a_keyring_names_the_environment_variable(tmp_path):
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    out = run(["auth", "set", "openai", "--stdin"], env, stdin=SECRET + "\n")
    assert out.returncode == 2
    assert "OPENAI_API_KEY" in out.stderr and SECRET not in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_auth_list_shows_env_keys_without_values(tmp_path):
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring", OPENAI_API_KEY=SECRET)
    out = run(["auth", "list"], env)
    assert out.returncode == 0 and SECRET not in out.stdout
    assert "OPENAI_API_KEY" in out.stdout and "present (env)" in out.stdout


DOCTOR_KEYS = {"version", "home", "config_sources", "ignored_settings", "db", "sandbox", "agents", "windsurf", "keys",
               "prices", "limits"}
DB_KEYS = {"url", "ok", "schema_version", "expected_schema_version", "error", "hint"}
SANDBOX_KEYS = {"runner", "found", "path", "version", "userns", "usable", "error", "hint"}
AGENT_KEYS = {"name", "command", "found", "path", "version", "hint"}
PRICE_KEYS = {"source", "sha256", "models", "overrides", "hint"}
LIMIT_KEYS = {"version", "limits", "per_process_only", "text", "hint", "child_file_size_kills", "child_file_size_note"}


def test_doctor_json_keys_are_stable_and_mask_the_db_password(loopmeter_home):
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
               LOOPMETER_DB_URL="postgresql://lm:hunter2@127.0.0.1:1/lm")
    out = run(["doctor", "--json"], env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == DOCTOR_KEYS
    assert set(report["db"]) == DB_KEYS and set(report["sandbox"]) == SANDBOX_KEYS
    assert set(report["prices"]) == PRICE_KEYS
    assert set(report["limits"]) == LIMIT_KEYS
    assert [a["name"] for a in report["agents"]] == ["claude-code", "codex", "cursor", "gemini", "aider"]
    assert all(set(a) == AGENT_KEYS for a in report["agents"])
    assert "hunter2" not in out.stdout and report["db"]["url"] == "postgresql://lm:***@127.0.0.1:1/lm"
    assert report["db"]["ok"] is False and report["db"]["hint"]
    assert report["windsurf"]["headless"] is False
    assert report["home"] == str(loopmeter_home)
    for agent in report["agents"]:
        assert agent["found"] or agent["hint"]


def test_doctor_human_output_exits_zero_with_hints(loopmeter_home):
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring", PATH="/usr/bin:/bin")
    out = run(["doctor"], env)
    assert out.returncode == 0
    assert "store" in out.stdout and "hint:" in out.stdout
