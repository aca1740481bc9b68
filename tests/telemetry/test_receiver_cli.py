"""`loopmeter collect` as people run it: a subprocess, stopped with SIGTERM, and --print-env."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import tomllib

import pytest
from sqlalchemy import select

from loopmeter.store import Usage, open_store
from tests.conftest import free_port, loopmeter_cmd
from tests.fixtures.otlp import payloads as p
from tests.telemetry.test_receiver import post


def _exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("export "):
            k, v = line.removeprefix("export ").split("=", 1)
            out[k] = v
        else:
            assert line.startswith("#"), line
    return out


def test_print_env_for_claude_code_and_gemini_names_the_collector():
    claude = subprocess.run(loopmeter_cmd("collect", "--print-env", "claude-code", "--port", "4999"),
                            capture_output=True, text=True, check=True).stdout
    env = _exports(claude)
    assert env["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert env["OTEL_LOGS_EXPORTER"] == "otlp" and env["OTEL_METRICS_EXPORTER"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4999"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] in ("http/protobuf", "http/json")

    gemini = subprocess.run(loopmeter_cmd("collect", "--print-env", "gemini"), capture_output=True, text=True,
                            check=True).stdout
    env = _exports(gemini)
    assert env["GEMINI_TELEMETRY_ENABLED"] == "true" and env["GEMINI_TELEMETRY_OTLP_PROTOCOL"] == "http"
    assert env["GEMINI_TELEMETRY_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"


def test_print_env_for_codex_is_a_toml_otel_block():
    out = subprocess.run(loopmeter_cmd("collect", "--print-env", "codex", "--port", "4319"), capture_output=True,
                         text=True, check=True).stdout
    otel = tomllib.loads(out)["otel"]
    assert otel["exporter"]["otlp-http"]["endpoint"] == "http://127.0.0.1:4319/v1/logs"
    assert otel["trace_exporter"]["otlp-http"]["endpoint"] == "http://127.0.0.1:4319/v1/traces"
    assert otel["log_user_prompt"] is False


def test_print_env_for_an_unknown_agent_is_bad_input():
    res = subprocess.run(loopmeter_cmd("collect", "--print-env", "windsurf"), capture_output=True, text=True)
    assert res.returncode == 2 and "claude-code, codex, gemini" in res.stderr


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("collect did not start listening")


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))  # no packet is sent; this only picks the outgoing interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_collect_listens_on_loopback_and_sigterm_flushes_what_it_accepted(sqlite_url):
    port = free_port()
    proc = subprocess.Popen(loopmeter_cmd("collect", "--port", str(port), "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, proc)
        other = _non_loopback_address()
        if other:
            with socket.socket() as s:
                assert s.connect_ex((other, port)) != 0, "bound beyond loopback without being told"
        ids = []
        for i in range(20):
            records = [p.claude_api_request(f"req_cli_{i}_{j}") for j in range(5)]
            ids += [f"anthropic-req:req_cli_{i}_{j}" for j in range(5)]
            assert post(port, "/v1/logs", p.otlp_proto(p.logs_request(records)))[0] == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["usage_new"] == 100 and stats["log_records"] == 100 and stats["bad_requests"] == 0
    assert err == ""  # quiet when not on a terminal
    store = open_store(sqlite_url)
    with store.session() as s:
        assert {r[0].key for r in s.exec(select(Usage))} == set(ids)
    store.dispose()


def test_collect_refuses_a_port_in_use_with_a_hint():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(loopmeter_cmd("collect", "--port", str(port)), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr and "--port" in res.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_names_are_recognised(host):
    from loopmeter.telemetry.receiver import is_loopback

    assert is_loopback(host)
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
