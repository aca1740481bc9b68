"""The egress proxy on its own: CONNECT and plain HTTP over its Unix socket, decisions and byte counts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from loopmeter.policies import parse_policy
from loopmeter.sandbox.proxy import EgressProxy


def _policy(tmp_path: Path, allow_local: str = "[]"):
    return parse_policy(f"name: p\nnetwork:\n  allow: ['models.test', '*.registry.test']\n"
                        f"  allow_local: {allow_local}\n", tmp_path / "p.yaml")


def _ask(proxy: EgressProxy, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(proxy.socket_path))
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_allowlisted_name_resolving_to_a_private_address_is_refused(tmp_path: Path) -> None:
    records = []
    proxy = EgressProxy(_policy(tmp_path), "agent:x", on_record=records.append,
                        resolve=lambda host, port: ["127.0.0.1"])
    try:
        answer = _ask(proxy, b"CONNECT models.test:443 HTTP/1.1\r\nHost: models.test:443\r\n\r\n")
    finally:
        proxy.close()
    assert answer.startswith(b"HTTP/1.1 403") and b"private or loopback" in answer
    assert records[0].decision.rule_id == "network.private-address"


@pytest.mark.parametrize("address", ["100.100.100.200", "100.64.0.7", "169.254.169.254", "fd00:ec2::254",
                                     "64:ff9b::a00:1", "10.1.2.3", "::ffff:127.0.0.1"])
def test_allowlisted_name_resolving_to_any_non_public_address_is_refused(tmp_path: Path, address: str) -> None:
    """DNS rebinding onto shared (100.64/10), metadata, NAT64-mapped or private addresses."""
    records = []
    proxy = EgressProxy(_policy(tmp_path), "agent:x", on_record=records.append,
                        resolve=lambda host, port: [address])
    try:
        answer = _ask(proxy, b"CONNECT models.test:443 HTTP/1.1\r\nHost: models.test:443\r\n\r\n")
    finally:
        proxy.close()
    assert answer.startswith(b"HTTP/1.1 403") and records[0].decision.rule_id == "network.private-address"


def test_plain_http_is_forwarded_with_byte_counts(tmp_path: Path, host_server: int) -> None:
    records = []
    proxy = EgressProxy(_policy(tmp_path, f"['127.0.0.1:{host_server}']"), "agent:x", on_record=records.append)
    try:
        answer = _ask(proxy, f"GET http://127.0.0.1:{host_server}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Proxy-Connection: keep-alive\r\n\r\n".encode())
    finally:
        proxy.close()
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"hello from the host\n")
    rec = records[0]
    assert rec.decision.allowed and rec.method == "GET" and rec.bytes_down == len(answer) and rec.bytes_up > 0


def test_denials_name_the_rule_in_a_header_and_unknown_ports_are_refused(tmp_path: Path) -> None:
    proxy = EgressProxy(_policy(tmp_path), "agent:x", resolve=lambda host, port: ["203.0.113.9"])
    try:
        other = _ask(proxy, b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
        port = _ask(proxy, b"CONNECT a.registry.test:22 HTTP/1.1\r\n\r\n")
        literal = _ask(proxy, b"CONNECT 10.1.2.3:443 HTTP/1.1\r\n\r\n")
    finally:
        proxy.close()
    assert b"X-Loopmeter-Rule: network.default-deny" in other
    assert b"X-Loopmeter-Rule: network.ports" in port
    assert b"X-Loopmeter-Rule: network.ip-literal" in literal
