"""`loopmeter policy lint`: hostile files get a short error, wide policies get a warning on their line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loopmeter.errors import ConfigError
from loopmeter.policies import PRESETS, load_policy
from loopmeter.policies.lint import lint_policy_file
from loopmeter.policies.loader import MAX_POLICY_BYTES
from tests.conftest import loopmeter_cmd

# 9 x 9 x ... : 9^8 = 43 million strings once expanded; the file is 337 bytes.
ALIAS_BOMB = """name: bomb
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
limits: {pids: *h}
"""

# In a child whose address space is capped at 600 MB (before the fix this file took 1.25 GB and
# 6-20 s): the time of load_policy alone, then the CLI's exit code, then the child's peak RSS in kB.
_MEASURE = """
import resource, runpy, sys, time
resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))
from loopmeter.errors import ConfigError
from loopmeter.policies import load_policy
start = time.perf_counter()
try:
    load_policy(sys.argv[1])
except ConfigError:
    pass
except MemoryError:
    pass
seconds = time.perf_counter() - start
sys.argv = ["loopmeter", "policy", "lint", sys.argv[1]]
try:
    runpy.run_module("loopmeter", run_name="__main__")
except SystemExit as exc:
    code = exc.code
except MemoryError:
    code = "MemoryError"
# VmHWM: this process image's peak RSS (ru_maxrss would carry the forking parent's over exec)
hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(f"MEASURE {code} {hwm} {seconds:.3f}", file=sys.stderr)
"""


def _write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _lint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(loopmeter_cmd("policy", "lint", *args), capture_output=True, text=True, timeout=60)


def _load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    return info.value.message


# -- hostile files ---------------------------------------------------------------------------
def test_alias_bomb_is_refused_quickly_in_little_memory(tmp_path: Path) -> None:
    bomb = _write(tmp_path, ALIAS_BOMB)
    assert bomb.stat().st_size < 400
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(bomb)], capture_output=True, text=True, timeout=60)
    code, maxrss_kb, seconds = out.stderr.split("MEASURE ")[1].split()
    assert code == "2", out.stderr
    assert f"error: {bomb}:5: YAML aliases expand to more than 20000 values (an alias bomb?)" in out.stderr
    assert int(maxrss_kb) < 120_000, maxrss_kb  # about 36 MB: the CLI's own start-up
    assert float(seconds) < 1, seconds  # a few ms


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    msg = _load_error(_write(tmp_path, "name: x\ndescription: &a [1, *a]\n"))
    assert msg == f"{tmp_path / 'p.yaml'}:2: a YAML alias refers to a node that contains it"


def test_a_few_aliases_are_still_fine(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "name: x\nnetwork:\n  allow: &hosts [pypi.org]\n"
                                          "rules:\n  - {id: a, action: exec, match: 'x', decision: deny}\n"))
    assert policy.model.network.allow == ["pypi.org"]


def test_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as fh:
        fh.write("name: big\ndescription: '")
        fh.write("x" * (MAX_POLICY_BYTES + 10))
        fh.write("'\n")
    msg = _load_error(big)
    assert msg == f"{big}: file is larger than {MAX_POLICY_BYTES // 1024} KiB; a policy is a few KiB of YAML"


def test_deep_nesting_is_a_clear_error(tmp_path: Path) -> None:
    msg = _load_error(_write(tmp_path, "name: x\ndescription: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert msg == f"{tmp_path / 'p.yaml'}: YAML nested too deeply to read"


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"name: x\ndescription: caf\xe9\n")
    assert _load_error(path) == f"{path}:2: not UTF-8 text (byte 24)"


def test_duplicate_key_is_refused_with_both_lines(tmp_path: Path) -> None:
    msg = _load_error(_write(tmp_path, "name: x\nnetwork:\n  allow: []\nlimits: {}\nnetwork:\n  allow: ['*.com']\n"))
    assert msg == f"{tmp_path / 'p.yaml'}:5: network: duplicate key (first at line 2)"


def test_control_characters_in_a_bad_key_are_escaped(tmp_path: Path) -> None:
    msg = _load_error(_write(tmp_path, 'name: x\n"evil\\e[2Jkey": 1\n'))
    assert "\x1b" not in msg and ":2: evil\\x1b[2Jkey: unknown key" in msg


def test_long_bad_values_are_cut_short(tmp_path: Path) -> None:
    msg = _load_error(_write(tmp_path, "name: x\nlimits:\n  pids: [" + ", ".join(["1234567890"] * 200) + "]\n"))
    assert ":3: limits.pids:" in msg and len(msg) < 250


# -- warnings, one class each ------------------------------------------------------------------
def _warnings(tmp_path: Path, text: str) -> list[tuple[int | None, str, str, str]]:
    result = lint_policy_file(_write(tmp_path, text))
    assert not result.errors, result.errors
    return [(w.line, w.code, w.field, w.message) for w in result.warnings]


def test_readable_or_writable_root_warns(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nfilesystem:\n  readable:\n    - /usr\n    - //\n  writable: ['/.']\n")
    assert found == [(5, "fs-root", "filesystem.readable.1", "'//' makes the whole host filesystem readable"),
                     (6, "fs-root", "filesystem.writable.0", "'/.' makes the whole host filesystem writable")]


def test_home_directories_warn(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nfilesystem:\n  writable:\n    - ~/\n    - /home\n  readable:\n"
                                "    - /usr\n    - /root\n")
    assert [(line, code, field) for line, code, field, _ in found] == [
        (4, "fs-home", "filesystem.writable.0"), (5, "fs-home", "filesystem.writable.1"),
        (8, "fs-home", "filesystem.readable.1")]
    assert found[0][3] == "'~/' makes a home directory writable (keys, tokens, shell history, other projects)"


def test_writable_system_directory_and_readable_host_state_warn(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nfilesystem:\n  writable: [/etc/cron.d]\n  readable: [/usr, /proc]\n")
    assert found == [
        (3, "fs-system", "filesystem.writable.0",
         "'/etc/cron.d' makes a system directory writable: what runs later on the host reads it"),
        (4, "fs-system", "filesystem.readable.1",
         "'/proc' exposes host proc state (processes, devices, sockets, logs)")]


def test_empty_hidden_list_warns(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nfilesystem:\n  hidden: []\n")
    assert found == [(3, "hidden-empty", "filesystem.hidden", "the hidden list is empty: ~/.ssh, cloud credentials "
                                                             "and /etc/shadow are visible wherever readable")]


def test_short_hidden_list_names_what_it_leaves_out(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nfilesystem:\n  hidden:\n    - ~/.ssh\n    - ~/.aws\n    - /etc/shadow\n")
    assert found == [(3, "hidden-missing", "filesystem.hidden",
                      "the hidden list leaves out ~/.config/gcloud, ~/.azure, ~/.kube, ~/.docker, ~/.netrc, "
                      "~/.gnupg, ~/.git-credentials")]


def test_public_suffix_wildcards_warn(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nnetwork:\n  allow:\n    - '*.com'\n    - '*.example.com'\n"
                                "    - '*.co.uk'\n    - '*.github.io'\n    - '*.dev:443'\n")
    assert [(line, code, field) for line, code, field, _ in found] == [
        (4, "net-tld-wildcard", "network.allow.0"), (6, "net-tld-wildcard", "network.allow.2"),
        (7, "net-tld-wildcard", "network.allow.3"), (8, "net-tld-wildcard", "network.allow.4")]
    assert found[1][3] == "'*.co.uk' matches every host under the public suffix 'co.uk': anybody can register one"


def test_metadata_endpoints_warn(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nnetwork:\n  allow: [metadata.google.internal]\n"
                                "  allow_local: ['169.254.169.254:80', '[fd00:ec2::254]:80', '100.100.100.200:80']\n"
                                "rules:\n  - id: meta\n    action: connect\n    match: '169.254.*'\n"
                                "    decision: allow\n")
    assert [(line, code, field) for line, code, field, _ in found] == [
        (3, "net-metadata", "network.allow.0"), (4, "net-metadata", "network.allow_local.0"),
        (4, "net-metadata", "network.allow_local.1"), (4, "net-metadata", "network.allow_local.2"),
        (8, "net-metadata", "rules.0.match")]
    assert found[0][3] == ("'metadata.google.internal' is a cloud metadata endpoint (GCP metadata); "
                           "loopmeter refuses it anyway")


def test_link_local_addresses_warn(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nnetwork:\n  allow_local:\n    - '169.254.1.1:80'\n    - '[fe80::1]:8080'\n")
    assert [(line, code) for line, code, _, _ in found] == [(4, "net-link-local"), (5, "net-link-local")]
    assert found[0][3] == "'169.254.1.1:80' is a link-local address (where cloud metadata and host agents live)"


def test_private_ranges_warn_but_loopback_in_allow_local_does_not(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nnetwork:\n  allow:\n    - '10.1.2.3:443'\n    - '*.internal'\n"
                                "  allow_local:\n    - '127.0.0.1:11434'\n    - '192.168.1.20:8000'\n"
                                "    - '100.64.0.9:80'\n    - 'localhost:8080'\n")
    assert [(line, code, field) for line, code, field, _ in found] == [
        (4, "net-private", "network.allow.0"), (5, "net-private", "network.allow.1"),
        (8, "net-private", "network.allow_local.1"), (9, "net-private", "network.allow_local.2")]
    assert found[2][3] == "'192.168.1.20:8000' is a private address: the sandbox reaches your local network through it"
    assert found[3][3].startswith("'100.64.0.9:80' is a shared (carrier-grade NAT) address")


def test_connect_rule_allowing_everything_warns(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nrules:\n  - id: open\n    action: connect\n    match: '*:*'\n"
                                "    decision: allow\n")
    assert (5, "net-allow-all", "rules.0.match", "rule 'open' allows a connection to every host") in found


def test_limits_turned_off_warn(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nlimits:\n  wall_s: null\n  cpu_s: 60\n  memory_mb: ~\n  pids: null\n"
                                "  output_kb: null\n  file_size_mb: null\n")
    assert found == [(3, "limits-off", "limits.wall_s", "null turns the wall-clock limit off"),
                     (5, "limits-off", "limits.memory_mb", "null turns the memory limit off"),
                     (6, "limits-off", "limits.pids", "null turns the process count limit off"),
                     (7, "limits-off", "limits.output_kb", "null turns the captured output limit off"),
                     (8, "limits-off", "limits.file_size_mb", "null turns the file size limit off")]


def test_secret_looking_env_passthrough_warns(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "name: x\nenv:\n  allow:\n    - PATH\n    - GITHUB_TOKEN\n    - AWS_PROFILE\n")
    assert [(line, code, field) for line, code, field, _ in found] == [
        (5, "env-secret", "env.allow.1"), (6, "env-secret", "env.allow.2")]


# -- the command ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS)
def test_presets_lint_clean_even_with_strict(name: str) -> None:
    result = lint_policy_file(name)
    assert result.findings == []
    out = _lint("--strict", name)
    assert out.returncode == 0 and out.stdout.startswith("ok  ") and "warning" not in out.stdout


def test_exit_codes_text_and_json(tmp_path: Path) -> None:
    wide = _write(tmp_path, "name: wide\nfilesystem:\n  hidden: []\n", "wide.yaml")
    bad = _write(tmp_path, "name: bad\nlimits:\n  wal_s: 3\n", "bad.yaml")
    out = _lint(str(wide))
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == (f"{wide}:3: warning: filesystem.hidden: the hidden list is empty: ~/.ssh, "
                                          "cloud credentials and /etc/shadow are visible wherever readable "
                                          "[hidden-empty]")
    assert out.stdout.splitlines()[1].endswith("(wide, sha256 " + load_policy(wide).sha256[:12] + ", 1 warning)")
    assert _lint("--strict", str(wide)).returncode == 1
    both = _lint("--strict", str(wide), str(bad))
    assert both.returncode == 2 and f"error: {bad}:3: limits.wal_s: unknown key" in both.stderr
    data = json.loads(_lint("--json", str(wide), str(bad)).stdout)
    assert [d["ok"] for d in data] == [True, False]
    assert data[0]["warnings"][0] == {"code": "hidden-empty", "line": 3, "field": "filesystem.hidden",
                                      "message": data[0]["warnings"][0]["message"],
                                      "hint": "leave 'hidden' out to get the default list, or extend it"}
    assert data[1]["errors"][0]["line"] == 3 and data[1]["errors"][0]["field"] == "limits.wal_s"
    assert data[1]["errors"][0]["message"] == "unknown key"
