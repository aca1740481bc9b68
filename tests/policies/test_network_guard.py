"""Cloud metadata endpoints and local addresses are refused by the policy decision itself, in every
preset and whatever the rules say; the proxy's own check on resolved addresses comes on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopmeter.policies import PRESETS, load_policy, netguard, parse_policy

METADATA_TARGETS = [
    "169.254.169.254:80", "metadata.google.internal:80", "METADATA.GOOGLE.INTERNAL.:80", "metadata:80",
    "metadata.goog:443", "instance-data.ec2.internal:80", "[fd00:ec2::254]:80", "100.100.100.200:80",
    "168.63.129.16:80", "169.254.170.2:80",
    # other spellings of 169.254.169.254 that the C resolver accepts
    "2852039166:80", "0xa9fea9fe:80", "0251.0376.0251.0376:80", "169.254.43518:80",
    "[::ffff:169.254.169.254]:80", "[::ffff:a9fe:a9fe]:80", "[64:ff9b::a9fe:a9fe]:80",
]
LOCAL_TARGETS = [
    "10.0.0.1:443", "172.16.5.4:443", "192.168.1.1:80", "127.0.0.1:8080", "0.0.0.0:80", "100.64.1.1:80",
    "[::1]:80", "[fd12:3456::1]:80", "[fe80::1]:80", "localhost:80", "db.internal:5432", "printer.local:631",
    "router.home.arpa:80", "intranet:80", "[::ffff:10.0.0.1]:80", "0x0a000001:80",
]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_refuse_metadata_endpoints_by_name_and_address(preset: str) -> None:
    policy = load_policy(preset)
    for target in METADATA_TARGETS:
        d = policy.decide("connect", target, "agent:claude-code")
        assert (d.decision, d.rule_id) == ("deny", "network.metadata"), (target, d)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_refuse_private_and_local_addresses(preset: str) -> None:
    policy = load_policy(preset)
    for target in LOCAL_TARGETS:
        d = policy.decide("connect", target, "agent:claude-code")
        assert d.decision == "deny" and d.rule_id in ("network.ip-literal", "network.local-name"), (target, d)
    assert policy.decide("connect", "pypi.org:443", "agent:x").decision == ("allow" if preset == "default" else "deny")


def _policy(tmp_path: Path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return parse_policy(text, path)


def test_no_rule_or_allow_list_opens_a_metadata_endpoint(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "name: open\nnetwork:\n  allow: [metadata.google.internal, '*.internal']\n"
                               "  allow_local: ['169.254.169.254:80', '[fd00:ec2::254]:80']\n"
                               "rules:\n  - {id: all, action: connect, match: '*', decision: allow}\n")
    for target in ("169.254.169.254:80", "metadata.google.internal:80", "[fd00:ec2::254]:80"):
        assert policy.decide("connect", target, "agent:x").rule_id == "network.metadata"
    # the rule does open public hosts, which is what the lint warning is about
    assert policy.decide("connect", "example.com:443", "agent:x").rule_id == "rules.all"


def test_a_rule_cannot_open_a_private_range_but_an_exact_allow_local_can(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "name: lan\nnetwork:\n  allow_local: ['10.0.0.5:8000', '127.0.0.1:11434']\n"
                               "rules:\n  - {id: lan, action: connect, match: '10.*', decision: allow}\n"
                               "  - {id: no-ollama, action: connect, match: '127.0.0.1:11434', decision: deny}\n")
    assert policy.decide("connect", "10.0.0.6:8000", "agent:x").rule_id == "network.ip-literal"
    assert policy.decide("connect", "10.0.0.5:8000", "agent:x").rule_id == "rules.lan"
    assert policy.decide("connect", "10.0.0.5:8001", "agent:x").decision == "deny"
    # a deny rule still applies to an allow_local entry
    assert policy.decide("connect", "127.0.0.1:11434", "agent:x").rule_id == "rules.no-ollama"


def test_blocked_address_is_the_check_for_what_a_name_resolved_to() -> None:
    assert netguard.blocked_address("169.254.169.254").startswith("a cloud metadata endpoint")
    assert netguard.blocked_address("100.100.100.200").startswith("a cloud metadata endpoint")
    assert netguard.blocked_address("100.64.0.1") == "a shared (carrier-grade NAT) address"
    assert netguard.blocked_address("64:ff9b::a00:1") == "a private address"  # NAT64 of 10.0.0.1
    assert netguard.blocked_address("2002:0a00:0001::1") == "a private address"  # 6to4 of 10.0.0.1
    assert netguard.blocked_address("93.184.215.14") is None
    assert netguard.blocked_address("2606:4700::1111") is None


def test_public_suffixes() -> None:
    for suffix in ("com", "dev", "co.uk", "com.au", "ne.jp", "github.io", "pages.dev", "s3.amazonaws.com"):
        assert netguard.public_suffix(suffix), suffix
    for domain in ("example.com", "cursor.sh", "anthropic.com", "googleapis.com", "bbc.co.uk"):
        assert not netguard.public_suffix(domain), domain


def test_the_proxy_refuses_metadata_names_even_when_dns_says_public(tmp_path: Path) -> None:
    """The real egress proxy over its Unix socket, with a policy whose rule allows every host and a
    resolver that answers a public address: only the name check can stop these."""
    import socket

    from loopmeter.sandbox.proxy import EgressProxy

    policy = _policy(tmp_path, "name: open\nnetwork:\n  allow: ['*.internal', 'metadata.goog']\n"
                               "rules:\n  - {id: all, action: connect, match: '*', decision: allow}\n")
    asked: list[str] = []
    records: list = []
    proxy = EgressProxy(policy, "agent:x", on_record=records.append,
                        resolve=lambda host, port: asked.append(host) or ["203.0.113.9"])
    answers = []
    try:
        for target in ("metadata.google.internal:80", "metadata.goog:80", "2852039166:80"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(proxy.socket_path))
                s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
                s.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            answers.append(data)
    finally:
        proxy.close()
    for data in answers:
        assert data.startswith(b"HTTP/1.1 403") and b"X-Loopmeter-Rule: network.metadata" in data, data[:200]
    assert asked == []  # refused before any name was resolved
    assert [r.decision.rule_id for r in records] == ["network.metadata"] * 3
