"""The egress proxy and the audit log under abuse, attacked from inside real bubblewrap sandboxes.

Each test runs attacker code (the system python3) inside a sandbox whose policy starts the proxy,
and checks what the host saw: the proxy's threads, the answers the attacker got, the audit rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from loopmeter.policies import load_policy, parse_policy
from loopmeter.policies.denials import PER_COMMAND, PER_TARGET, group_denials
from loopmeter.sandbox.bridge import MAX_CONNECTIONS as BRIDGE_CAP
from loopmeter.sandbox.bridge import MAX_WAITING as BRIDGE_WAITING
from loopmeter.sandbox.proxy import MAX_CONNECTIONS, MAX_TARGET, SHOWN_TARGET
from loopmeter.store import Audit
from tests.conftest import loopmeter_cmd

AGENT = {"role": "agent", "actor": "agent:attacker"}
SOCK = "/run/loopmeter/proxy.sock"
CONTROL = set(range(0x20)) - {0x0A} | set(range(0x7F, 0xA0))


def _policy(tmp_path: Path):
    # a wildcard: the old proxy handed any name under it to the resolver (and crashed on bad IDNA)
    return parse_policy("name: abuse\nnetwork:\n  allow: ['*.registry.test', 'models.test']\n",
                        tmp_path / "abuse.yaml")


def _rows(store, run_id: str) -> list[dict]:
    t = Audit.__table__
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t).where(t.c.run_id == run_id).order_by(t.c.seq))]


def _attack(runner, tmp_path: Path, workdir: Path, script: str, *args: str, run_id: str, timeout_s: float = 300):
    code = textwrap.dedent(script)
    return runner.run(["python3", "-I", "-c", code, *args], workdir=workdir, policy=_policy(tmp_path),
                      run_id=run_id, timeout_s=timeout_s, **AGENT)


@contextmanager
def _thread_peak() -> Iterator[dict[str, int]]:
    """The most threads this process (where the proxy runs) had while the block ran."""
    seen = {"base": threading.active_count(), "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen["peak"] = max(seen["peak"], threading.active_count())
            stop.wait(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()


# -- the connection cap ------------------------------------------------------------------------------

FLOOD_SOCKET = r"""
import json, resource, select, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n, expect = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):  # idle connections straight to the proxy's socket: the old proxy gave each a thread
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("/run/loopmeter/proxy.sock")
    socks.append(s)
poll = select.poll()
by_fd = {s.fileno(): s for s in socks}
for fd in by_fd:
    poll.register(fd, select.POLLIN)
answers, last = {}, time.monotonic()
while len(answers) < expect and time.monotonic() - last < 10:
    for fd, _ in poll.poll(500):
        data = by_fd[fd].recv(4096)
        answers[fd] = data.split(b"\r\n", 1)[0].decode()
        poll.unregister(fd)
        last = time.monotonic()
codes = [a.split(" ")[1] if a else "eof" for a in answers.values()]
print(json.dumps({"connected": len(socks), "503": codes.count("503"), "other": len(codes) - codes.count("503"),
                  "silent": len(socks) - len(answers)}))
"""


def test_1500_idle_connections_to_the_proxy_socket_get_at_most_the_cap(runner, store, workdir: Path,
                                                                        tmp_path: Path) -> None:
    n = 1500
    with _thread_peak() as threads:
        res = _attack(runner, tmp_path, workdir, FLOOD_SOCKET, str(n), str(n - MAX_CONNECTIONS), run_id="flood")
    assert res.exit_code == 0, res.stderr
    seen = json.loads(res.stdout)
    # exactly the cap is served (and sits waiting for a request head); every other one is answered 503 at once
    assert seen == {"connected": n, "503": n - MAX_CONNECTIONS, "other": 0, "silent": MAX_CONNECTIONS}
    # one thread per served connection at most: not one per connection
    assert threads["peak"] - threads["base"] <= MAX_CONNECTIONS + 16, threads
    rows = _rows(store, "flood")
    capped = [r for r in rows if r["rule_id"] == "proxy.max-connections"]
    assert len(capped) <= PER_TARGET + 1  # a few on their own, then one summary with the count
    assert sum(g.count for g in group_denials(capped)) == n - MAX_CONNECTIONS
    assert len(res.stderr.splitlines()) <= PER_TARGET + 2


FLOOD_BRIDGE = r"""
import json, resource, select, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n = int(sys.argv[1])
socks = []
for _ in range(n):  # a burst of connections to the bridge at 127.0.0.1:3128, all left idle
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", 3128))
    socks.append(s)
poll = select.poll()
for s in socks:
    poll.register(s.fileno(), select.POLLOUT)
up, deadline = set(), time.monotonic() + 60
while len(up) < n and time.monotonic() < deadline:
    for fd, ev in poll.poll(500):
        up.add(fd)
        poll.unregister(fd)
time.sleep(1)
# then each connection asks for a denied host: every one must get an answer, served in turn or refused
codes = {}
for s in socks:
    try:
        s.setblocking(True)
        s.sendall(b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
    except OSError:
        pass  # already refused and closed by the bridge: its answer is waiting to be read
for s in socks:
    s.settimeout(120)
    try:
        code = s.recv(4096).split(b" ", 2)[1].decode()
    except (OSError, IndexError) as exc:
        code = type(exc).__name__
    codes[code] = codes.get(code, 0) + 1
    s.close()
after = socket.create_connection(("127.0.0.1", 3128))
after.sendall(b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
print(json.dumps({"connected": len(up), "codes": codes, "after": after.recv(4096).split(b" ", 2)[1].decode()}))
"""


def test_1500_connections_through_the_bridge_are_bridged_64_at_a_time_and_all_answered(
        runner, store, workdir: Path, tmp_path: Path) -> None:
    n = 1500
    with _thread_peak() as threads:
        res = _attack(runner, tmp_path, workdir, FLOOD_BRIDGE, str(n), run_id="bridge-flood")
    assert res.exit_code == 0, res.stderr
    seen = json.loads(res.stdout)
    served = BRIDGE_CAP + BRIDGE_WAITING  # open at once, plus waiting without a thread; the rest refused at once
    assert seen == {"connected": n, "codes": {"403": served, "503": n - served}, "after": "403"}, seen
    # the bridge holds at most its cap open towards the host's proxy, so the host's threads stay there too
    assert threads["peak"] - threads["base"] <= BRIDGE_CAP + 16, threads
    assert f"{n - served} connections refused" in res.stderr
    rows = _rows(store, "bridge-flood")
    assert sum(g.count for g in group_denials(rows)) == served + 1  # each bridged one was decided and counted
    assert not any(r["rule_id"] == "proxy.max-connections" for r in rows)


# -- hostile targets ----------------------------------------------------------------------------------

ASK = r"""
import json, socket, sys
out = []
for raw in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) if sys.argv[2] == "socket" else socket.socket()
    s.connect("/run/loopmeter/proxy.sock" if sys.argv[2] == "socket" else ("127.0.0.1", 3128))
    s.sendall(raw.encode("latin-1"))
    s.settimeout(60)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError as exc:
        data += f"[{exc}]".encode()
    s.close()
    out.append(data.decode("latin-1"))
print(json.dumps(out))
"""


def _ask_all(runner, tmp_path: Path, workdir: Path, requests: list[str], run_id: str, via: str = "bridge"):
    res = _attack(runner, tmp_path, workdir, ASK, json.dumps(requests), via, run_id=run_id)
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout), _rows(runner.store, run_id)


@pytest.mark.parametrize("via", ["bridge", "socket"])
def test_a_100kb_hostname_is_answered_and_recorded_short(runner, workdir: Path, tmp_path: Path, via: str) -> None:
    huge = "a" * 100_000 + ".registry.test"
    requests = [f"CONNECT {huge}:443 HTTP/1.1\r\n\r\n",  # longer than a request head may be
                f"CONNECT {'b' * 5000}.registry.test:443 HTTP/1.1\r\n\r\n",  # a head that fits, a target that does not
                f"GET http://{'c' * 5000}.registry.test/ HTTP/1.1\r\nHost: x\r\n\r\n"]
    answers, rows = _ask_all(runner, tmp_path, workdir, requests, run_id=f"long-{via}", via=via)
    assert answers[0].startswith("HTTP/1.1 431 ")
    assert answers[1].startswith("HTTP/1.1 400 ") and "X-Loopmeter-Rule: proxy.bad-target" in answers[1]
    assert answers[2].startswith("HTTP/1.1 400 ") and "X-Loopmeter-Rule: proxy.bad-target" in answers[2]
    assert all(len(a) < 2000 for a in answers)  # the answer does not echo the name back in full
    denied = [r for r in rows if r["layer"] == "proxy"]
    assert [r["rule_id"] for r in denied] == ["proxy.bad-request", "proxy.bad-target", "proxy.bad-target"]
    assert all(len(r["target"]) <= SHOWN_TARGET + 20 for r in denied)
    assert str(MAX_TARGET) in json.loads(denied[1]["detail"])["reason"]


@pytest.mark.parametrize("via", ["bridge", "socket"])
def test_control_bytes_in_a_target_are_refused_and_recorded_escaped(runner, store, workdir: Path, tmp_path: Path,
                                                                    via: str, loopmeter_home: Path) -> None:
    spoof = "\r\n     9 2026-01-01T00:00:00 proxy  connect    allow models.test:443"
    requests = [
        "CONNECT evil\x1b[2J\x1b[H.registry.test:443 HTTP/1.1\r\n\r\n",  # clear the reviewer's screen
        "CONNECT a\nb.registry.test:443 HTTP/1.1\r\n\r\n",  # a bare LF inside the request line
        "CONNECT a\rb.registry.test:443 HTTP/1.1\r\n\r\n",  # a bare CR
        "CONNECT x\x9b31m.registry.test:443 HTTP/1.1\r\n\r\n",  # C1 CSI, one byte
        "CONNECT n\x00ul.registry.test:443 HTTP/1.1\r\n\r\n",
        f"CONNECT models.test:443{spoof} HTTP/1.1\r\n\r\n",  # CRLF: a second "line" in the request
        "GET http://evil\x1b]0;owned\x07.registry.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    answers, rows = _ask_all(runner, tmp_path, workdir, requests, run_id=f"ctl-{via}", via=via)
    assert all(a.startswith("HTTP/1.1 400 ") for a in answers), answers
    assert not any(set(a.encode("latin-1")) & CONTROL - {0x0D} for a in answers)  # no raw bytes echoed
    denied = [r for r in rows if r["layer"] == "proxy"]
    assert len(denied) == len(requests)
    assert {r["rule_id"] for r in denied} <= {"proxy.bad-target", "proxy.bad-request"}
    assert "\\x1b[2J" in denied[0]["target"]  # stored escaped: safe wherever it is shown
    for r in denied:
        assert not set(r["target"].encode()) & CONTROL
    # every face that prints targets: `audit log` and `audit summary`
    for argv in (["audit", "log"], ["audit", "summary", f"ctl-{via}"]):
        out = subprocess.run(loopmeter_cmd(*argv), capture_output=True)
        assert out.returncode == 0, out.stderr
        assert not set(out.stdout) & CONTROL, out.stdout


def test_audit_log_escapes_control_bytes_of_any_origin(runner, store, workdir: Path, tmp_path: Path) -> None:
    """An exec target is the argv as given: a title-setting escape in it stays raw in the store, and is
    escaped by `audit log`, `audit summary` and `policy suggest` (and in the stderr denial lines)."""
    (tmp_path / "p.yaml").write_text("name: p\nrules:\n  - {id: no-echo, action: exec, match: 'echo *', "
                                     "decision: deny}\n")
    policy = load_policy(tmp_path / "p.yaml")
    evil = "\x1b]0;pwned\x07\x1b[2J\r\n   1 2026 policy exec allow harmless\u202e"
    res = runner.run(["echo", evil], workdir=workdir, policy=policy, run_id="raw", **AGENT)
    assert res.exit_code == 126
    rows = _rows(store, "raw")
    assert "\x1b" in rows[0]["target"]  # the store keeps what happened
    for argv in (["audit", "log"], ["audit", "log", "--denied", "--run", "raw"], ["audit", "summary", "raw"],
                 ["policy", "suggest", "raw", "--policy", str(tmp_path / "p.yaml")]):
        out = subprocess.run(loopmeter_cmd(*argv), capture_output=True)
        assert out.returncode == 0, out.stderr
        assert not set(out.stdout) & CONTROL and "\u202e".encode() not in out.stdout, (argv, out.stdout)
        assert b"\\x1b" in out.stdout, argv
    js = subprocess.run(loopmeter_cmd("audit", "log", "--json"), capture_output=True)
    assert json.loads(js.stdout)[0]["target"] == rows[0]["target"]  # --json keeps it exact (JSON-escaped)


# -- resolution errors --------------------------------------------------------------------------------

def test_invalid_idna_and_unresolvable_names_are_answered_and_audited(runner, workdir: Path, tmp_path: Path) -> None:
    names = ["xn--a.registry.test", "a..b.registry.test", "a" * 64 + ".registry.test", "xn--zz.registry.test",
             "-lead.registry.test", "xn--abc-.registry.test", ".registry.test", "under_score-ok.registry.test"]
    requests = [f"CONNECT {n}:443 HTTP/1.1\r\nHost: {n}\r\n\r\n" for n in names]
    answers, rows = _ask_all(runner, tmp_path, workdir, requests, run_id="idna")
    status = [a.split(" ", 2)[1] for a in answers]
    # malformed names never reach the resolver; a well-formed one that does not resolve is a 502
    assert status == ["400"] * 7 + ["502"], answers
    proxy_rows = [r for r in rows if r["layer"] == "proxy"]
    assert len(proxy_rows) == len(names)
    assert [r["rule_id"] for r in proxy_rows] == ["proxy.bad-target"] * 7 + ["network.dns"]
    assert "IDNA" in json.loads(proxy_rows[0]["detail"])["reason"]
    assert "EAI_NONAME" in json.loads(proxy_rows[-1]["detail"])["reason"]
    assert all(json.loads(r["detail"])["status"] == int(s) for r, s in zip(proxy_rows, status, strict=True))


EAI_AGAIN_HOST = r"""
import json, socket, sys
from pathlib import Path
from loopmeter.policies import load_policy, parse_policy
from loopmeter.sandbox.proxy import EgressProxy
records = []
policy = parse_policy("name: p\nnetwork:\n  allow: ['*.registry.test']\n", Path(sys.argv[1]))
with EgressProxy(policy, "agent:x", on_record=records.append) as proxy:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(proxy.socket_path))
    s.sendall(b"CONNECT pkg.registry.test:443 HTTP/1.1\r\n\r\n")
    answer = s.recv(4096).decode()
print(json.dumps({"answer": answer.split("\r\n")[0], "rule": records[0].decision.rule_id,
                  "reason": records[0].decision.reason}))
"""


def test_a_resolver_that_cannot_answer_gives_504_and_a_record(tmp_path: Path) -> None:
    """The proxy in a network namespace of its own: the resolver cannot reach a name server (EAI_AGAIN,
    what a resolver timeout gives)."""
    try:
        res = subprocess.run(["unshare", "-rn", sys.executable, "-c", EAI_AGAIN_HOST, str(tmp_path / "p.yaml")],
                             capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if res.returncode != 0 and "unshare" in res.stderr:
        pytest.skip(f"no user namespaces: {res.stderr.strip()}")
    seen = json.loads(res.stdout)
    assert seen["answer"].startswith("HTTP/1.1 504 ")
    assert seen["rule"] == "network.dns-timeout" and "EAI_AGAIN" in seen["reason"]


# -- denial floods -----------------------------------------------------------------------------------

HAMMER = r"""
import json, socket, sys
n, mode = int(sys.argv[1]), sys.argv[2]
codes = {}
for i in range(n):
    host = "evil.test" if mode == "same" else f"h{i}.evil.test"
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/loopmeter/proxy.sock")
    s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\n\r\n".encode())
    code = s.recv(4096).split(b" ", 2)[1].decode()
    codes[code] = codes.get(code, 0) + 1
    s.close()
print(json.dumps(codes))
"""


@pytest.mark.parametrize("mode", ["same", "distinct"])
def test_10000_denied_connects_leave_a_bounded_number_of_rows_with_the_right_count(
        runner, store, workdir: Path, tmp_path: Path, mode: str, loopmeter_home: Path) -> None:
    n = 10_000
    res = _attack(runner, tmp_path, workdir, HAMMER, str(n), mode, run_id=f"hammer-{mode}")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == {"403": n}
    rows = [r for r in _rows(store, f"hammer-{mode}") if r["layer"] == "proxy"]
    # same: 3 on their own + 1 summary; distinct: 50 on their own + 1 summary naming the most frequent
    bound = PER_TARGET + 1 if mode == "same" else PER_COMMAND + 1
    assert len(rows) == bound, len(rows)
    groups = group_denials(rows)
    assert sum(g.count for g in groups) == n
    if mode == "same":
        assert [(g.target, g.count, g.rule_id) for g in groups] == [("evil.test:443", n, "network.default-deny")]
    # stderr carries one line per record at most, each cut short
    lines = [x for x in res.stderr.splitlines() if x.startswith("loopmeter: denied")]
    assert len(lines) <= bound and all(len(x) < 700 for x in lines)
    summary = json.loads(subprocess.run(loopmeter_cmd("audit", "summary", f"hammer-{mode}", "--json"),
                                        capture_output=True, text=True).stdout)
    assert summary["total"] == n and summary["by_kind"] == [{"layer": "proxy", "action": "connect", "count": n}]
    log = subprocess.run(loopmeter_cmd("audit", "log", "--run", f"hammer-{mode}"), capture_output=True, text=True)
    assert len(log.stdout.splitlines()) == bound + 1  # the exec record, the denials, the summary ...
    assert log.stdout.splitlines()[-1].endswith(f"(x{n if mode == 'same' else n - PER_COMMAND})")  # ... and its count
    # the chain stays intact with summary records in it
    verify = subprocess.run(loopmeter_cmd("audit", "verify", "--json"), capture_output=True, text=True)
    assert json.loads(verify.stdout)["ok"] is True, verify.stdout
