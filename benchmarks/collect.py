"""`loopmeter collect` under a bounded load on loopback.

Starts `loopmeter collect` as its own process (temporary LOOPMETER_HOME, SQLite unless
--db-url), then sends OTLP/HTTP log exports from this process at a fixed rate: each
request carries --batch Claude Code `api_request` records with unique request ids.
A 503 is retried after its Retry-After, as an OTLP exporter does. At the end the
collector is stopped with SIGTERM (it flushes) and the store is counted.

Prints records sent / accepted / stored, the loss (accepted - stored, must be 0),
accepted records per second, and p50 / p99 / max request latency.

    python benchmarks/collect.py [--rate 3000] [--seconds 20] [--batch 50] [--workers 4] [--encoding proto|json]

Target (issue 3): >= 2,000 records/s accepted and stored, zero loss.

`--hostile` instead sends, to a fresh collector each, bodies meant to break it (a string
the store cannot encode, a number it cannot hold, deep nesting, truncated protobuf and
gzip, a gzip bomb, floods of tiny records, several large bodies at once) between good
requests, and prints each one's answers, the collector's peak RSS (VmHWM) and how many
of the good records were stored. Records the store refused are counted as set aside.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf.json_format import MessageToDict  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402

TARGET_RATE = 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def build_payload(req_no: int, batch: int, encoding: str, run: str) -> bytes:
    """One export request of `batch` api_request events, shaped like Claude Code's."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([_kv("service.name", "claude-code"), _kv("service.version", "2.1.197")])
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    now = time.time_ns()
    for j in range(batch):
        rec = sl.log_records.add()
        rec.time_unix_nano = now + j
        rec.body.string_value = "claude_code.api_request"
        rec.attributes.extend([
            _kv("session.id", f"bench-session-{req_no % 17}"), _kv("event.name", "api_request"),
            _kv("event.sequence", j), _kv("model", "claude-sonnet-4-5-20250929"),
            _kv("input_tokens", 100 + j), _kv("output_tokens", 20), _kv("cache_read_tokens", 3000),
            _kv("cache_creation_tokens", 50), _kv("cost_usd", 0.0123), _kv("duration_ms", 900),
            _kv("request_id", f"req_bench_{run}_{req_no:07d}_{j:04d}"), _kv("user.id", "u" * 64),
        ])
    if encoding == "json":
        return json.dumps(MessageToDict(req)).encode()
    return bytes(req.SerializeToString())


class Load:
    def __init__(self, port: int, payloads: list[bytes], batch: int, rate: float, workers: int, content_type: str):
        self.port = port
        self.payloads = payloads
        self.batch = batch
        self.interval = batch * workers / rate  # seconds between requests, per worker
        self.workers = workers
        self.content_type = content_type
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.accepted = 0
        self.busy = 0
        self.errors: list[str] = []

    def _send(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[int, float, str | None]:
        t0 = time.perf_counter()
        conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": self.content_type})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t0, resp.getheader("Retry-After")

    def worker(self, w: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        start = time.perf_counter()
        for k, body in enumerate(self.payloads[w::self.workers]):
            due = start + k * self.interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            while True:
                try:
                    status, latency, retry_after = self._send(conn, body)
                except (OSError, http.client.HTTPException) as exc:
                    with self.lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    continue
                with self.lock:
                    self.latencies.append(latency)
                    if status == 200:
                        self.accepted += self.batch
                    elif status == 503:
                        self.busy += 1
                    else:
                        self.errors.append(f"HTTP {status}")
                if status != 503:
                    break
                time.sleep(float(retry_after or 1))
        conn.close()

    def run(self) -> float:
        threads = [threading.Thread(target=self.worker, args=(w,)) for w in range(self.workers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0


def count_stored(db_url: str, run: str) -> int:
    from sqlalchemy import create_engine, text

    url = db_url.replace("postgresql://", "postgresql+psycopg://", 1) if db_url.startswith("postgresql://") else db_url
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM usage WHERE source = 'otlp' AND key LIKE :prefix"),
                         {"prefix": f"anthropic-req:req_bench_{run}_%"})
        value = int(n.scalar_one())
    engine.dispose()
    return value


def start_collector(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], int] | None:
    port = free_port()
    collector = subprocess.Popen([sys.executable, "-m", "loopmeter", "collect", "--port", str(port), "--json", *args],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return collector, port
        if collector.poll() is not None or time.time() > deadline:
            print("collector did not start:", collector.communicate()[1], file=sys.stderr)
            return None
        time.sleep(0.05)


# -- hostile bodies ------------------------------------------------------------------

MB = 1 << 20


def _field(number: int, payload: bytes) -> bytes:
    from google.protobuf.internal.encoder import _VarintBytes

    return _VarintBytes(number << 3 | 2) + _VarintBytes(len(payload)) + payload


def _json_with(run: str, tag: str, attr: str, value: dict[str, str]) -> bytes:
    """A JSON request of three good records and one whose `attr` is set to `value`."""
    doc = json.loads(build_payload(0, 4, "json", f"{run}_{tag}"))
    record = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]
    for kv in record["attributes"]:
        if kv["key"] == attr:
            kv["value"] = value
    return json.dumps(doc).encode()


def _deep_json(depth: int) -> bytes:
    body = '{"arrayValue":{"values":[' * depth + '{"stringValue":"x"}' + "]}}" * depth
    return ('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1","body":' + body + "}]}]}]}").encode()


def _gzip_zeros(n: int) -> bytes:
    z = zlib.compressobj(1, wbits=31)
    return b"".join([z.compress(bytes(MB)) for _ in range(n // MB)] + [z.flush()])


def _big_json(run: str, i: int, size: int) -> bytes:
    doc = json.loads(build_payload(10_000 + i, 1, "json", run))
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"].append(
        {"key": "tool_output", "value": {"stringValue": "PLACEHOLDER"}})
    return json.dumps(doc).encode().replace(b"PLACEHOLDER", b"a" * size)


def hostile_cases(run: str) -> list[tuple[str, list[tuple[bytes, str, str | None]], int]]:
    """(name, [(body, content type, content encoding), ...] sent at once, good records in them)."""
    js, pb = "application/json", "application/x-protobuf"
    flood_json = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + b",".join([b"{}"] * 5_000_000) + b"]}]}]}"
    flood_pb = _field(1, _field(2, b"\x12\x00" * 7_500_000))
    good = build_payload(0, 3, "proto", f"{run}_trunc")
    return [
        ("a lone surrogate in one of 4 records", [(_json_with(run, "sur", "session.id", {"stringValue": "s\ud800"}),
                                                   js, None)], 3),
        ("10**30 tokens in one of 4 records", [(_json_with(run, "big", "input_tokens", {"intValue": str(10**30)}),
                                                js, None)], 3),
        ("100k nested JSON arrays", [(b'{"resourceLogs":' + b"[" * 100_000 + b"]" * 100_000 + b"}", js, None)], 0),
        ("JSON values nested 5000 deep", [(_deep_json(5000), js, None)], 0),
        ("truncated protobuf", [(good[:-7], pb, None)], 0),
        ("garbage gzip", [(b"\x1f\x8b\x08\x00garbage" * 100, pb, "gzip")], 0),
        ("truncated gzip", [(gzip.compress(good)[:-12], pb, "gzip")], 0),
        ("gzip bomb: 1 GB of zeros in 1 MB", [(_gzip_zeros(1024 * MB), pb, "gzip")], 0),
        ("15 MB of empty JSON records", [(flood_json, js, None)], 0),
        ("15 MB of empty protobuf records", [(flood_pb, pb, None)], 0),
        ("three 15 MB JSON floods at once", [(flood_json, js, None)] * 3, 0),
        ("six 60 MB bodies at once (503s retried)", [(_big_json(run, i, 60 * MB), js, None) for i in range(6)], 6),
    ]


def _post(port: int, body: bytes, content_type: str, encoding: str | None) -> tuple[Any, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Content-Type": content_type, **({"Content-Encoding": encoding} if encoding else {})}
    try:
        conn.request("POST", "/v1/logs", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, {}, b""
    finally:
        conn.close()


def _send_retrying(port: int, body: bytes, ctype: str, enc: str | None, answers: list[str], i: int) -> None:
    status, headers, _ = _post(port, body, ctype, enc)
    tries = 1
    while status == 503 and tries < 30:  # an exporter retries after Retry-After
        time.sleep(float(headers.get("Retry-After", "1")))
        status, headers, _ = _post(port, body, ctype, enc)
        tries += 1
    answers[i] = f"{status}" if tries == 1 else f"503x{tries - 1}>{status}"


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hostile() -> int:
    run = f"h{os.getpid()}{int(time.time())}"
    print(f"{'body':42} {'answers':36} {'peak RSS':>9} {'good stored':>12} {'set aside':>9}")
    failed = False
    for n, (name, bodies, in_bodies) in enumerate(hostile_cases(run)):
        home = Path(tempfile.mkdtemp(prefix="lm-collect-hostile-"))
        db_url = f"sqlite:///{home / 'loopmeter.db'}"
        started = start_collector({**os.environ, "LOOPMETER_HOME": str(home), "LOOPMETER_DB_URL": db_url})
        if started is None:
            return 2
        collector, port = started
        tag = f"{run}_{n}"
        good = 0
        for k in range(2):  # good records before
            good += 10 * (_post(port, build_payload(k, 10, "proto", f"{tag}_a"), "application/x-protobuf",
                                None)[0] == 200)
        answers: list[str] = [""] * len(bodies)
        threads = [threading.Thread(target=_send_retrying, args=(port, *b, answers, i)) for i, b in enumerate(bodies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = _peak_rss_mb(collector.pid)
        for k in range(2):  # and after
            good += 10 * (_post(port, build_payload(k, 10, "proto", f"{tag}_b"), "application/x-protobuf",
                                None)[0] == 200)
        collector.send_signal(signal.SIGTERM)
        out, err = collector.communicate(timeout=300)
        stats = json.loads(out) if out.strip() else {}
        stored = count_stored(db_url, run)  # a store of its own: every good record of this run
        expected = good + in_bodies
        failed |= stored != expected or good != 40 or collector.returncode != 0
        counts = Counter(answers)
        shown = ", ".join(f"{k}" if v == 1 else f"{v}x {k}" for k, v in counts.items())
        print(f"{name:42} {shown:36} {peak:>6.0f} MB {stored:>6}/{expected:<5} {stats.get('dead_lettered', '?'):>9}",
              flush=True)
    print("FAIL: good records were lost" if failed else "PASS: every good record sent around them was stored")
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=3000, help="log records per second to offer (default 3000)")
    ap.add_argument("--seconds", type=float, default=20, help="how long to offer them (default 20)")
    ap.add_argument("--batch", type=int, default=50, help="log records per request (default 50)")
    ap.add_argument("--workers", type=int, default=4, help="concurrent keep-alive connections (default 4)")
    ap.add_argument("--encoding", choices=["proto", "json"], default="proto")
    ap.add_argument("--db-url", help="store to write to (default: SQLite in a temporary LOOPMETER_HOME)")
    ap.add_argument("--hostile", action="store_true", help="send hostile bodies instead of a load (see above)")
    args = ap.parse_args()
    if args.hostile:
        return hostile()

    home = Path(tempfile.mkdtemp(prefix="lm-collect-bench-"))
    db_url = args.db_url or f"sqlite:///{home / 'loopmeter.db'}"
    env = {**os.environ, "LOOPMETER_HOME": str(home), "LOOPMETER_DB_URL": db_url}
    n_requests = max(1, int(args.rate * args.seconds / args.batch))
    print(f"building {n_requests} requests x {args.batch} records ({args.encoding}) ...", flush=True)
    run = f"{os.getpid()}{int(time.time())}"  # request ids unique to this run, so a reused database still counts right
    payloads = [build_payload(i, args.batch, args.encoding, run) for i in range(n_requests)]
    sent = n_requests * args.batch

    started = start_collector(env)
    if started is None:
        return 2
    collector, port = started

    with open(f"/proc/{collector.pid}/stat") as fh:  # CPU spent starting, told apart from the load's
        fields = fh.read().rsplit(")", 1)[1].split()
    startup_cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    content_type = "application/json" if args.encoding == "json" else "application/x-protobuf"
    load = Load(port, payloads, args.batch, args.rate, args.workers, content_type)
    print(f"offering {args.rate:.0f} records/s for {args.seconds:.0f} s to {collector.pid} on 127.0.0.1:{port}",
          flush=True)
    wall = load.run()
    t_stop = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    collector.send_signal(signal.SIGTERM)
    out, err = collector.communicate(timeout=300)
    drain = time.perf_counter() - t_stop
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the collector, reaped: its CPU and peak RSS
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    stats = json.loads(out) if out.strip() else {}
    stored = count_stored(db_url, run)

    lat = sorted(load.latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    rate = load.accepted / wall
    lost = load.accepted - stored
    print(f"records sent       {sent}")
    print(f"records accepted   {load.accepted}  (HTTP 200; {load.busy} answers were 503 + Retry-After, retried)")
    print(f"records stored     {stored}  (collector says {stats.get('usage_new')} new)")
    print(f"lost               {lost}")
    print(f"accepted rate      {rate:.0f} records/s over {wall:.1f} s ({len(lat)} requests)")
    print(f"request latency    p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {lat[-1] * 1000:.1f} ms")
    print(f"stop + flush       {drain:.2f} s  (stored end to end: {stored / (wall + drain):.0f} records/s)")
    print(f"collector CPU      {startup_cpu:.2f} s to start, {cpu - startup_cpu:.2f} s for the load "
          f"({1e6 * (cpu - startup_cpu) / max(stored, 1):.0f} ms per 1000 records); peak RSS "
          f"{usage.ru_maxrss / 1024:.0f} MB")
    if load.errors or collector.returncode != 0:
        print(f"errors: {load.errors[:5]} collector exit {collector.returncode} {err[-500:]}", file=sys.stderr)
    ok = lost == 0 and stored == load.accepted == sent and rate >= TARGET_RATE
    print(f"{'PASS' if ok else 'FAIL'}: target >= {TARGET_RATE} records/s accepted and stored with zero loss")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
