"""The OTLP receiver against bodies meant to break it: records the store cannot take,
bodies it cannot parse, floods of tiny records and many large bodies at once.

Real parts only: `loopmeter collect` as a subprocess (its peak RSS read from
/proc/<pid>/status VmHWM) or the Receiver on a loopback port, a real SQLite (or
PostgreSQL) store, real HTTP. Each test checks the answer, that memory stayed bounded
where memory is the point, and that the good records sent around the bad ones are stored.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.internal.encoder import _VarintBytes
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from loopmeter.telemetry.receiver import Receiver
from tests.conftest import free_port, loopmeter_cmd
from tests.fixtures.otlp import payloads as p
from tests.telemetry.test_receiver import PRICES, post, span_rows, usage_rows
from tests.telemetry.test_receiver_cli import _wait_listening

MB = 1024 * 1024
FAKE_API_KEY = "sk-ant-api03-hostile-test-secret-0123456789"
FAKE_BEARER = "otlp-bearer-hostile-test-secret-9876543210"


# -- bodies ----------------------------------------------------------------------


def _json_doc(req: Any) -> dict[str, Any]:
    return json.loads(p.otlp_json(req))


def _set_attr(doc: dict[str, Any], request_id: str, key: str, value: dict[str, Any]) -> None:
    """Give the log record with `request_id` attribute `key` = `value` (an OTLP/JSON AnyValue)."""
    for rl in doc["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for rec in sl["logRecords"]:
                attrs = rec["attributes"]
                if any(a["key"] == "request_id" and a["value"].get("stringValue") == request_id for a in attrs):
                    for a in attrs:
                        if a["key"] == key:
                            a["value"] = value
                            return
    raise AssertionError(f"no record {request_id} with {key}")


def _good(tag: str, n: int) -> bytes:
    return p.otlp_proto(p.logs_request([p.claude_api_request(f"req_{tag}_{i}") for i in range(n)]))


def _good_keys(tag: str, n: int) -> set[str]:
    return {f"anthropic-req:req_{tag}_{i}" for i in range(n)}


def _pb_field(number: int, payload: bytes) -> bytes:
    return _VarintBytes(number << 3 | 2) + _VarintBytes(len(payload)) + payload


def _proto_logs(records: bytes) -> bytes:
    """ExportLogsServiceRequest{resource_logs[0].scope_logs[0].log_records = records (encoded)}."""
    return _pb_field(1, _pb_field(2, records))


def _json_flood(n: int) -> bytes:
    """About 3 bytes per log record: `{}`, `{}`, ... (an empty record is a valid one)."""
    return b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + b",".join([b"{}"] * n) + b"]}]}]}"


def _proto_flood(n: int) -> bytes:
    return _proto_logs(b"\x12\x00" * n)  # n empty LogRecords: 2 bytes each


def _deep_any_value_json(depth: int) -> bytes:
    value = '{"stringValue":"x"}'
    body = '{"arrayValue":{"values":[' * depth + value + "]}}" * depth
    return ('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1","body":' + body + "}]}]}]}").encode()


def _deep_any_value_proto(depth: int) -> bytes:
    value = AnyValue(string_value="x").SerializeToString()
    for _ in range(depth):
        value = _pb_field(5, _pb_field(1, value))  # AnyValue.array_value.values[0]
    return _proto_logs(_pb_field(2, _pb_field(5, value)))  # log_records[0].body


def _gzip_zeros(n: int) -> bytes:
    """gzip of n zero bytes, made without holding them."""
    z = zlib.compressobj(1, wbits=31)
    zeros = bytes(MB)
    return b"".join([z.compress(zeros) for _ in range(n // MB)] + [z.flush()])


def _large_json(request_id: str, size: int) -> bytes:
    """One Claude Code api_request record whose body is a `size`-byte string."""
    doc = _json_doc(p.logs_request([p.claude_api_request(request_id)]))
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"] = {"stringValue": "claude_code.api_request"}
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"].append(
        {"key": "tool_output", "value": {"stringValue": "PLACEHOLDER"}})
    return json.dumps(doc).encode().replace(b"PLACEHOLDER", b"a" * size)


# -- the collector as a process ----------------------------------------------------


class Collector:
    def __init__(self, home: Path, *args: str):
        self.home = home
        self.port = free_port()
        env = {**os.environ, "ANTHROPIC_API_KEY": FAKE_API_KEY}
        self.proc = subprocess.Popen(loopmeter_cmd("collect", "--port", str(self.port), "--json", *args), env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_listening(self.port, self.proc)

    def post(self, body: bytes, *, path: str = "/v1/logs", content_type: str = "application/x-protobuf",
             encoding: str | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {FAKE_BEARER}"}
        if encoding:
            headers["Content-Encoding"] = encoding
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, dict(resp.getheaders()), data

    def post_all(self, bodies: list[tuple[bytes, str]]) -> list[tuple[int, dict[str, str], bytes]]:
        """Send the bodies at once, each on its own connection."""
        out: list[Any] = [None] * len(bodies)

        def send(i: int) -> None:
            out[i] = self.post(bodies[i][0], content_type=bodies[i][1])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def stop(self) -> tuple[dict[str, Any], str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err
        return json.loads(out), out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def keys(self, table: str = "usage", column: str = "key") -> set[str]:
        db = sqlite3.connect(self.home / "loopmeter.db")
        try:
            return {r[0] for r in db.execute(f"SELECT {column} FROM {table}")}  # noqa: S608 - test constants
        finally:
            db.close()


@pytest.fixture
def collector(loopmeter_home: Path):
    started: list[Collector] = []

    def start(*args: str) -> Collector:
        c = Collector(loopmeter_home, *args)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()


def _dead_letters(home: Path) -> list[dict[str, Any]]:
    path = home / "collect-dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- records the store cannot take -------------------------------------------------


def test_records_the_store_cannot_take_are_set_aside_and_the_rest_are_stored(collector, loopmeter_home):
    c = collector()
    # one request: good, a lone surrogate (no UTF-8 for it), good, a token count SQLite cannot hold
    req = p.logs_request([p.claude_api_request(r) for r in ("req_ok_1", "req_bad_text", "req_ok_2", "req_bad_num")])
    doc = _json_doc(req)
    _set_attr(doc, "req_bad_text", "session.id", {"stringValue": "sess-\ud800"})
    _set_attr(doc, "req_bad_num", "input_tokens", {"intValue": str(10**30)})
    status, _, body = c.post(json.dumps(doc).encode(), content_type="application/json")
    assert status == 200 and json.loads(body) == {}
    # spans: one fine, one starting at 2**64 - 1 ns (out of SQLite's range)
    good_span = p.make_span("good span")
    bad_span = p.make_span("bad span")
    bad_span.start_time_unix_nano = bad_span.end_time_unix_nano = 2**64 - 1
    assert c.post(p.otlp_proto(p.traces_request([good_span, bad_span])), path="/v1/traces")[0] == 200
    for i in range(4):  # and what comes after is stored
        assert c.post(_good(f"after{i}", 25))[0] == 200
    stats, out, err = c.stop()

    expected = {"anthropic-req:req_ok_1", "anthropic-req:req_ok_2"}.union(*(_good_keys(f"after{i}", 25)
                                                                            for i in range(4)))
    assert c.keys() == expected
    assert c.keys("span", "span_id") == {good_span.span_id.hex()}
    assert stats["dead_lettered"] == 3 and stats["usage_new"] == 102 and stats["spans_stored"] == 1
    letters = _dead_letters(loopmeter_home)
    by_kind = {(d["kind"], d["record"].get("key") or d["record"].get("name")): d["reason"] for d in letters}
    assert set(by_kind) == {("usage", "anthropic-req:req_bad_text"), ("usage", "anthropic-req:req_bad_num"),
                            ("span", "bad span")}
    assert by_kind["usage", "anthropic-req:req_bad_text"].startswith("UnicodeEncodeError")
    assert by_kind["usage", "anthropic-req:req_bad_num"].startswith("OverflowError")
    assert by_kind["span", "bad span"].startswith("OverflowError")
    text_letter = next(d for d in letters if d["record"].get("key") == "anthropic-req:req_bad_text")
    assert text_letter["record"]["session_id"] == "sess-\ud800"  # kept as received, escaped in the file
    # one line for the first, the rest counted in one more at stop; the path named, no record content
    lines = err.splitlines()
    assert 1 <= len(lines) <= 2 and all("collect-dead-letter.jsonl" in line for line in lines), err
    assert "set aside" in lines[0] and "req_bad" not in err
    # secrets: the collector's API key and the exporter's bearer token reach no output, file or store
    stored = b"".join(f.read_bytes() for f in loopmeter_home.iterdir() if f.is_file())
    for secret in (FAKE_API_KEY, FAKE_BEARER):
        assert secret not in out + err and secret.encode() not in stored


def test_a_batch_is_bisected_so_only_the_bad_records_are_set_aside(store, sqlite_url, tmp_path):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, spill_dir=tmp_path, log=lambda line: None)
    receiver.start()
    lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # requests queue up, so the writer takes them as one batch
    try:
        bad = {7, 150, 151, 299}
        for r in range(6):
            req = p.logs_request([p.claude_api_request(f"req_b{50 * r + i}") for i in range(50)])
            doc = _json_doc(req)
            for n in bad & set(range(50 * r, 50 * r + 50)):
                _set_attr(doc, f"req_b{n}", "model", {"stringValue": "claude-\udfff"})
            assert post(receiver.port, "/v1/logs", json.dumps(doc).encode(), content_type="application/json")[0] == 200
    finally:
        lock.execute("COMMIT")
        lock.close()
    stats = receiver.stop()
    assert set(usage_rows(store)) == {f"anthropic-req:req_b{n}" for n in range(300) if n not in bad}
    assert sorted(d["record"]["key"] for d in _dead_letters(tmp_path)) == sorted(f"anthropic-req:req_b{n}"
                                                                                 for n in bad)
    assert stats["dead_lettered"] == 4 and stats["usage_new"] == 296


def test_a_store_that_fails_for_every_record_is_retried_not_set_aside(store, tmp_path):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, spill_dir=tmp_path, log=lambda line: None)
    receiver.start()
    with store.engine.begin() as conn:  # the store's fault, not the records': its table is gone
        conn.exec_driver_sql("ALTER TABLE usage RENAME TO usage_elsewhere")
    try:
        assert post(receiver.port, "/v1/logs", _good("gone", 10))[0] == 200
        deadline = time.time() + 60
        while receiver.stats.snapshot()["write_errors"] < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE usage_elsewhere RENAME TO usage")
    stats = receiver.stop()
    assert stats["write_errors"] >= 2 and stats["dead_lettered"] == 0
    assert not (tmp_path / "collect-dead-letter.jsonl").exists()
    assert set(usage_rows(store)) == _good_keys("gone", 10)


def test_postgres_refusals_are_set_aside_too(pg_store, tmp_path):
    receiver = Receiver(pg_store, "127.0.0.1", 0, prices=PRICES, spill_dir=tmp_path, log=lambda line: None)
    receiver.start()
    ids = ["req_pg_ok1", "req_pg_nul", "req_pg_long", "req_pg_surrogate", "req_pg_ok2"]
    doc = _json_doc(p.logs_request([p.claude_api_request(r) for r in ids]))
    _set_attr(doc, "req_pg_nul", "session.id", {"stringValue": "a\x00b"})  # PostgreSQL text holds no NUL
    _set_attr(doc, "req_pg_long", "session.id", {"stringValue": "s" * 300})  # over varchar(256)
    _set_attr(doc, "req_pg_surrogate", "model", {"stringValue": "m\ud800"})
    assert post(receiver.port, "/v1/logs", json.dumps(doc).encode(), content_type="application/json")[0] == 200
    assert post(receiver.port, "/v1/logs", _good("pg_after", 10))[0] == 200
    stats = receiver.stop()
    assert set(usage_rows(pg_store)) == {"anthropic-req:req_pg_ok1", "anthropic-req:req_pg_ok2"} | _good_keys(
        "pg_after", 10)
    assert {d["record"]["key"] for d in _dead_letters(tmp_path)} == {
        "anthropic-req:req_pg_nul", "anthropic-req:req_pg_long", "anthropic-req:req_pg_surrogate"}
    assert stats["dead_lettered"] == 3


# -- bodies it cannot parse, floods ------------------------------------------------


def test_unparseable_bodies_get_400_floods_413_and_memory_stays_bounded(collector):
    c = collector()
    valid = _good("valid", 3)
    json_ct, pb_ct = "application/json", "application/x-protobuf"
    cases: list[tuple[str, bytes, str, str | None, int, str]] = [
        ("100k nested arrays", b'{"resourceLogs":' + b"[" * 100_000 + b"]" * 100_000 + b"}", json_ct, None, 400,
         "nested"),
        ("values nested 5000 deep", _deep_any_value_json(5000), json_ct, None, 400, "nested"),
        ("values nested 400 deep", _deep_any_value_json(400), json_ct, None, 400, "nested"),
        ("protobuf values nested 40 deep", _deep_any_value_proto(40), pb_ct, None, 400, "nested"),
        ("protobuf values nested 200 deep", _deep_any_value_proto(200), pb_ct, None, 400, "protobuf"),
        ("protobuf values nested 30000 deep", _deep_any_value_proto(30_000), pb_ct, None, 400, "deep"),
        ("truncated protobuf", valid[:-7], pb_ct, None, 400, "protobuf"),
        ("not JSON", b'{"resourceLogs": [', json_ct, None, 400, "JSON"),
        ("garbage gzip", b"\x1f\x8b\x08\x00garbage" * 100, pb_ct, "gzip", 400, "gzip"),
        ("truncated gzip", gzip.compress(valid)[:-12], pb_ct, "gzip", 400, "gzip"),
        ("gzip bomb (1 GB of zeros)", _gzip_zeros(1024 * MB), pb_ct, "gzip", 413, "limit"),
        ("15 MB of tiny JSON records", _json_flood(5_000_000), json_ct, None, 413, "values"),
        ("15 MB of tiny protobuf records", _proto_flood(7_500_000), pb_ct, None, 413, "values"),
    ]
    assert c.post(_good("before", 5))[0] == 200
    start_mb = c.peak_rss_mb()
    for name, body, ctype, encoding, want, word in cases:
        status, headers, answer = c.post(body, content_type=ctype, encoding=encoding)
        assert status == want, (name, answer[:200])
        assert word in answer.decode("utf-8", "replace"), (name, answer[:200])
    floods = c.post_all([(_json_flood(5_000_000), json_ct)] * 3)  # three at once
    assert [s for s, _, _ in floods] == [413, 413, 413]
    peak = c.peak_rss_mb()
    for i in range(3):
        assert c.post(_good(f"after{i}", 20))[0] == 200
    stats, _, err = c.stop()
    # Before these limits one 15 MB JSON flood took the collector to 456 MB, a protobuf one to
    # 1.09 GB and three JSON floods at once to 1.2 GB; here the peak is the bodies and little more.
    assert peak < 300, f"peak RSS {peak:.0f} MB (at start {start_mb:.0f} MB)"
    assert stats["bad_requests"] == len(cases) + 3 and err == ""
    assert c.keys() == _good_keys("before", 5).union(*(_good_keys(f"after{i}", 20) for i in range(3)))


def test_several_large_bodies_at_once_are_taken_within_the_memory_budget(collector):
    c = collector("--memory-budget", "128")
    size = 30 * MB
    bodies = {f"req_large_{i}": _large_json(f"req_large_{i}", size) for i in range(6)}
    answers = dict(zip(bodies, c.post_all([(b, "application/json") for b in bodies.values()]), strict=True))
    for status, headers, answer in answers.values():
        assert status in (200, 503), answer[:200]
        if status == 503:
            assert int(headers["Retry-After"]) > 0 and b"busy" in answer
    for rid, (status, headers, _) in answers.items():  # what an exporter does with a 503
        while status == 503:
            time.sleep(int(headers["Retry-After"]))
            status, headers, _ = c.post(bodies[rid], content_type="application/json")
        assert status == 200
    peak = c.peak_rss_mb()
    stats, _, _ = c.stop()
    # six 30 MB bodies decoded at once took 600 MB before the budget; 128 MiB budget + ~85 MB at start
    assert peak < 330, f"peak RSS {peak:.0f} MB"
    assert c.keys() == {f"anthropic-req:{rid}" for rid in bodies}


# -- what 503 means ----------------------------------------------------------------


def _fill_until(receiver: Receiver, condition, tag: str) -> tuple[threading.Thread, dict[str, Any], list[str]]:
    """Send 50-record requests, one at a time, until one is still unanswered and `condition()` holds."""
    sent: list[str] = []
    for n in range(500):
        result: dict[str, Any] = {}
        body = _good(f"{tag}{n}", 50)
        t = threading.Thread(target=lambda b=body, r=result: r.update(answer=post(receiver.port, "/v1/logs", b)))
        t.start()
        deadline = time.time() + 60
        while t.is_alive() and not condition() and time.time() < deadline:
            time.sleep(0.01)
        sent.append(f"{tag}{n}")
        if t.is_alive():
            assert condition()
            return t, result, sent
        assert result["answer"][0] == 200, result["answer"]
    raise AssertionError("the budget never filled")


def test_requests_wait_for_a_decode_slot_then_get_503_with_retry_after(store, sqlite_url):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, max_decodes=1, slot_wait_s=0, memory_wait_s=120,
                        memory_budget=3 * MB, log=lambda line: None)
    receiver.start()
    lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # nothing is written: rows waiting for the store fill the budget
    try:
        waiting, result, sent = _fill_until(receiver, lambda: receiver.budget.waiting == 1, "slot")
        # the one decode slot is held by a request waiting for memory: the next one is told to come back
        status, headers, body = post(receiver.port, "/v1/logs", _good("refused", 50))
        assert status == 503 and int(headers["Retry-After"]) > 0
        assert b"decode slots are busy" in body
    finally:
        lock.execute("COMMIT")
        lock.close()
    waiting.join(120)
    assert result["answer"][0] == 200  # the writer freed memory: the waiting request went through
    assert post(receiver.port, "/v1/logs", _good("refused", 50))[0] == 200
    stats = receiver.stop()
    assert set(usage_rows(store)) == _good_keys("refused", 50).union(*(_good_keys(t, 50) for t in sent))
    assert stats["overloaded"] == 1


def test_when_the_memory_budget_is_in_use_requests_get_503_and_nothing_accepted_is_lost(store, sqlite_url):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, memory_wait_s=0, memory_budget=3 * MB,
                        log=lambda line: None)
    receiver.start()
    lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    accepted: list[str] = []
    try:
        for n in range(500):
            status, headers, body = post(receiver.port, "/v1/logs", _good(f"mem{n}", 50))
            if status != 200:
                break
            accepted.append(f"mem{n}")
        assert status == 503 and int(headers["Retry-After"]) > 0 and b"memory budget is in use" in body
        assert accepted and receiver.budget.used <= receiver.budget.limit
    finally:
        lock.execute("COMMIT")
        lock.close()
    for _ in range(200):  # the exporter's retry, once the writer has caught up
        status = post(receiver.port, "/v1/logs", _good(f"mem{n}", 50))[0]
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200
    receiver.stop()
    assert set(usage_rows(store)) == _good_keys(f"mem{n}", 50).union(*(_good_keys(t, 50) for t in accepted))
    assert receiver.budget.used == 0  # every byte taken was given back


def test_a_body_that_would_need_more_than_the_whole_budget_gets_413(store):
    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, memory_budget=4 * MB, log=lambda line: None)
    receiver.start()
    try:
        status, _, body = post(receiver.port, "/v1/logs", _large_json("req_too_big", 3 * MB),
                               content_type="application/json")
        assert status == 413 and b"memory budget" in body
        assert post(receiver.port, "/v1/logs", _good("fits", 5))[0] == 200
    finally:
        receiver.stop()
    assert set(usage_rows(store)) == _good_keys("fits", 5) and span_rows(store) == []


# -- HTTP kept through the move to aiohttp -------------------------------------------


def _read_response(sock: Any) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_expect_100_continue_is_answered_before_the_body_is_sent(store):
    import socket

    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, max_body=1 * MB, log=lambda line: None)
    receiver.start()
    try:
        body = _good("expect", 5)
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=30) as sock:
            sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
            assert _read_response(sock).startswith(b"HTTP/1.1 100 Continue")  # as curl waits for
            sock.sendall(body)
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=30) as sock:
            sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (2 * MB))
            assert _read_response(sock).startswith(b"HTTP/1.1 413")  # refused before a byte of it is sent
    finally:
        receiver.stop()
    assert set(usage_rows(store)) == _good_keys("expect", 5)


def test_malformed_chunked_framing_is_a_400_and_the_receiver_carries_on(store):
    import socket

    receiver = Receiver(store, "127.0.0.1", 0, prices=PRICES, log=lambda line: None)
    receiver.start()
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=30) as sock:
            sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
            assert b" 400 " in _read_response(sock).split(b"\r\n")[0]  # aiohttp's parser answers it
        assert post(receiver.port, "/v1/logs", _good("chunk", 3), chunked=True)[0] == 200
    finally:
        receiver.stop()
    assert set(usage_rows(store)) == _good_keys("chunk", 3)
