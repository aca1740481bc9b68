"""Policy files: presets load, decisions follow the file, bad files name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopmeter.errors import ConfigError
from loopmeter.policies import PRESETS, list_presets, load_policy


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_policy(_write(tmp_path, text))
    return info.value.message


def test_every_preset_loads_with_a_stable_sha256() -> None:
    assert set(PRESETS) <= set(list_presets())
    for name in PRESETS:
        a, b = load_policy(name), load_policy(name)
        assert a.name == name and len(a.sha256) == 64 and a.sha256 == b.sha256


def test_unknown_key_names_file_line_and_field(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nnetwork:\n  allow: []\n  alow_local: []\n")
    assert msg.startswith(f"{tmp_path / 'p.yaml'}:4: network.alow_local: unknown key")


def test_wrong_type_names_line_and_field(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nlimits:\n  wall_s: 10\n  pids: many\n")
    assert ":4: limits.pids:" in msg and "integer" in msg


def test_bad_value_in_a_list_names_the_item_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nrules:\n  - id: a\n    action: exec\n    decision: allow\n"
                           "  - id: b\n    action: exec\n    decision: maybe\n")
    assert ":8: rules.1.decision: bad value 'maybe'" in msg


def test_negative_limit_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nlimits:\n  memory_mb: -5\n")
    assert ":3: limits.memory_mb:" in msg and "greater than 0" in msg


def test_bad_host_pattern_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nnetwork:\n  allow:\n    - 'exa*mple.com'\n")
    assert ":4: network.allow:" in msg or ":3: network.allow:" in msg
    assert "bad host pattern" in msg


def test_secret_for_the_check_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nsecrets:\n  check: [ANTHROPIC_API_KEY]\n")
    assert ":3: secrets:" in msg or ":2: secrets:" in msg
    assert "only to agents" in msg


def test_missing_name_is_reported(tmp_path: Path) -> None:
    msg = _error(tmp_path, "network: {}\n")
    assert "name: required field is missing" in msg


def test_relative_path_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nfilesystem:\n  readable: [usr]\n")
    assert "filesystem.readable" in msg and "must be absolute" in msg


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nnetwork:\n  allow: [a\n  b: c\n")
    assert "not valid YAML" in msg and str(tmp_path / "p.yaml") + ":" in msg


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ConfigError) as info:
        load_policy("nonesuch")
    assert "default" in (info.value.hint or "")


def test_decisions_follow_the_policy() -> None:
    policy = load_policy("default")
    assert policy.decide("connect", "api.anthropic.com:443", "agent:claude-code").decision == "allow"
    assert policy.decide("connect", "evil.example:443", "agent:claude-code").rule_id == "network.default-deny"
    assert policy.decide("connect", "10.0.0.1:443", "agent:claude-code").decision == "deny"
    assert policy.decide("connect", "api.anthropic.com:22", "agent:claude-code").rule_id == "network.ports"
    assert policy.decide("exec", "git push origin main", "agent:codex").decision == "deny"
    assert policy.decide("exec", "sudo rm -rf /", "agent:codex").decision == "ask"
    assert policy.decide("read", "~/.ssh/id_rsa", "check").decision == "deny"
    assert policy.decide("exec", "pytest -q", "check").decision == "allow"


def test_suffix_patterns_and_allow_local(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "name: x\nnetwork:\n  allow: ['*.example.org']\n"
                                          "  allow_local: ['127.0.0.1:11434']\n"))
    assert policy.decide("connect", "a.b.example.org:443", "agent:x").decision == "allow"
    assert policy.decide("connect", "example.org.evil.com:443", "agent:x").decision == "deny"
    assert policy.decide("connect", "127.0.0.1:11434", "agent:x").rule_id == "network.allow_local"
    assert policy.decide("connect", "127.0.0.1:11435", "agent:x").decision == "deny"


def test_secrets_go_only_to_the_named_agent() -> None:
    policy = load_policy("default")
    assert policy.secrets_for("agent:claude-code") == ["ANTHROPIC_API_KEY"]
    assert policy.secrets_for("check") == []
    assert load_policy("strict").secrets_for("agent:claude-code") == []


def test_bad_local_endpoint_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nnetwork:\n  allow_local: ['11434']\n")
    assert "network.allow_local" in msg and "use 'host:port'" in msg


def test_port_out_of_range_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nnetwork:\n  ports: [443, 70000]\n")
    assert "network.ports" in msg and "out of range" in msg


def test_bad_secret_variable_name_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nsecrets:\n  agent:claude-code: ['ANTHROPIC-KEY']\n")
    assert "secrets" in msg and "bad environment variable name" in msg


def test_unknown_guarantee_in_requires_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\nrequires: [teleport]\n")
    assert ":2: requires.0: bad value 'teleport'" in msg


def test_unknown_top_level_key_hint_lists_known_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(_write(tmp_path, "name: x\nnetwrok: {}\n"))
    assert info.value.message.endswith(":2: netwrok: unknown key")
    assert "network" in (info.value.hint or "")
