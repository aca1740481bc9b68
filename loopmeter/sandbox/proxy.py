"""The egress proxy on the host: HTTP CONNECT and plain HTTP, on a Unix socket that is
bind-mounted into the sandbox. Each connection is decided by the policy (plus per-call
`extra_allow`), refused with an HTTP error and the reason, and audited with host, port and bytes.

The proxy is the sandbox's only way out, and whatever the sandbox sends it is hostile input:
- at most `max_connections` (MAX_CONNECTIONS) connections are served at a time; each one over
  that is answered `503` at once, closed and recorded (rule `proxy.max-connections`), so one
  sandbox cannot make the host start a thread per connection;
- a request head is read for at most HEAD_TIMEOUT_S and MAX_HEAD bytes (`431` past it);
- a target must be `host:port` with an ASCII host name of valid labels (or an IP literal), at most
  MAX_TARGET characters, without control bytes; anything else is answered `400` (rule
  `proxy.bad-target`), and the record keeps at most SHOWN_TARGET characters of it, escaped;
- every resolution error (IDNA, EAI_*, a timeout) is answered `502`/`504` and audited, and any
  other failure inside a handler is answered `502` and audited (rule `proxy.error`): no request
  ends without an answer and a record.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopmeter.policies.policy import Decision, Policy, is_ip_literal, split_host_port
from loopmeter.safe_text import has_unsafe, printable

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT_S = 30.0
# The bridge inside holds at most 64 connections at a time (bridge.py MAX_CONNECTIONS); the rest are
# room for connections the proxy is still closing and auditing when the bridge already has the next one.
MAX_CONNECTIONS = 96
MAX_TARGET = 300  # a 253-character name, ':' and a port; an IPv6 literal in brackets is far shorter
SHOWN_TARGET = 200  # what a refused request's record and answer keep of its target
RECORD_QUEUE = 1024  # records waiting for `on_record`; a full queue holds the handlers back
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_EAI = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}
_STATUS = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass
class ConnectionRecord:
    target: str
    method: str
    decision: Decision
    bytes_up: int = 0
    bytes_down: int = 0
    error: str | None = None
    status: int = 200  # what the proxy answered (200 for a tunnel or a forwarded request)


def _private(addr: str) -> bool:
    """A private, loopback, link-local, shared (100.64/10), metadata or otherwise non-public address:
    the policies' one definition (loopmeter.policies.netguard)."""
    from loopmeter.policies.netguard import blocked_address

    return blocked_address(addr) is not None


class EgressProxy:
    """One proxy per sandboxed command; `on_record` is called once per connection when it ends."""

    def __init__(self, policy: Policy, actor: str, extra_allow: Sequence[str] = (),
                 on_record: Callable[[ConnectionRecord], None] | None = None,
                 resolve: Callable[[str, int], list[str]] | None = None,
                 max_connections: int = MAX_CONNECTIONS, head_timeout_s: float = HEAD_TIMEOUT_S):
        self.policy = policy
        self.actor = actor
        self.extra_allow = {_norm(t) for t in extra_allow}
        self.on_record = on_record
        self.resolve = resolve or _resolve
        self.max_connections = max_connections
        self.head_timeout_s = head_timeout_s
        self.peak = 0  # most connections served at once
        self.refused = 0  # connections answered 503 at the cap
        self.dir = Path(tempfile.mkdtemp(prefix="lm-proxy-"))
        self.socket_path = self.dir / "proxy.sock"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o777)  # the sandboxed uid may differ
        self._server.listen(64)
        self._closed = threading.Event()
        self._active: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self._lock = threading.Lock()
        # `on_record` (an audit write) runs on one thread of its own, so a handler's thread ends, and its
        # slot is free, as soon as its connection is closed; started with the first record
        self._records: queue.Queue[ConnectionRecord | None] = queue.Queue(RECORD_QUEUE)
        self._recorder: threading.Thread | None = None
        self._records_closed = False
        self._thread = threading.Thread(target=self._accept, name="lm-egress-proxy", daemon=True)
        self._thread.start()

    # -- decisions ------------------------------------------------------------
    def decide(self, target: str) -> Decision:
        target = _norm(target)
        if target in self.extra_allow:
            return Decision("allow", "extra_allow", f"{target} was allowed for this command by the caller")
        decision = self.policy.decide("connect", target, self.actor)
        return decision

    def _connect_upstream(self, target: str, decision: Decision) -> tuple[socket.socket | None, Decision, int]:
        """(the upstream socket, or None with why and the HTTP status to answer)."""
        host, port = split_host_port(target)
        if port is None:
            return None, Decision("deny", "network.no-port", f"{target} has no port"), 403
        explicit = decision.rule_id in ("extra_allow", "network.allow_local")
        try:
            addrs = [host] if is_ip_literal(host) else self.resolve(host, port)
        except socket.gaierror as exc:
            name = _EAI.get(exc.errno, f"error {exc.errno}")
            if exc.errno == getattr(socket, "EAI_AGAIN", None):  # what a resolver timeout gives
                return None, Decision("deny", "network.dns-timeout",
                                      f"{host}: the resolver gave no answer ({name}: {exc.strerror})"), 504
            return None, Decision("deny", "network.dns", f"{host} does not resolve ({name}: {exc.strerror})"), 502
        except TimeoutError as exc:
            return None, Decision("deny", "network.dns-timeout", f"{host}: resolving timed out ({exc})"), 504
        except (UnicodeError, ValueError, OSError) as exc:
            return None, Decision("deny", "network.dns",
                                  f"{host} cannot be resolved: {printable(str(exc), 200)}"), 502
        if not addrs:
            return None, Decision("deny", "network.dns", f"{host} does not resolve"), 502
        if not explicit and any(_private(a) for a in addrs):
            return None, Decision("deny", "network.private-address",
                                  f"{host} resolves to a private or loopback address"), 403
        last: OSError | None = None
        for addr in addrs:
            try:
                return socket.create_connection((addr, port), timeout=15), decision, 200
            except OSError as exc:
                last = exc
        status = 504 if isinstance(last, TimeoutError) else 502
        return None, Decision("deny", "network.unreachable", f"cannot reach {target}: {last}"), status

    # -- serving ----------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                full = len(self._handlers) >= self.max_connections
                if not full:
                    t = threading.Thread(target=self._serve_one, args=(conn,), daemon=True)
                    self._active.add(conn)
                    self._handlers.add(t)
                    self.peak = max(self.peak, len(self._handlers))
                else:
                    self.refused += 1
            if full:
                self._over_cap(conn)
                continue
            try:
                t.start()
            except RuntimeError:  # the host cannot start another thread: refuse, never stop accepting
                with self._lock:
                    self._active.discard(conn)
                    self._handlers.discard(t)
                self._over_cap(conn)

    def _over_cap(self, conn: socket.socket) -> None:
        """Answer a connection over the cap without reading it (no thread, never blocks), and record it."""
        reason = (f"more than {self.max_connections} connections at once from one sandbox; "
                  "this one was refused unread")
        try:
            conn.setblocking(False)
            _reply(conn, 503, f"loopmeter egress proxy: {reason}", rule="proxy.max-connections")
        finally:
            conn.close()
        self._finish(ConnectionRecord("(not read)", "-", Decision("deny", "proxy.max-connections", reason),
                                      status=503))

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        finally:
            with self._lock:
                self._active.discard(conn)
                self._handlers.discard(threading.current_thread())

    def _handle(self, conn: socket.socket) -> None:
        seen = {"target": "(not read)", "method": "-"}
        try:
            rec = self._serve(conn, seen)
        except Exception as exc:  # noqa: BLE001 - no request ends without an answer and a record
            rec = ConnectionRecord(seen["target"], seen["method"], Decision(
                "deny", "proxy.error", f"the proxy failed on this request: {type(exc).__name__}: "
                                       f"{printable(str(exc), 200)}"), status=502)
            self._refuse(conn, rec)
        finally:
            conn.close()
        if rec is not None:
            self._finish(rec)

    def _refuse(self, conn: socket.socket, rec: ConnectionRecord) -> ConnectionRecord:
        d = rec.decision
        _reply(conn, rec.status, f"loopmeter egress proxy denied {rec.target}: {printable(d.reason)} "
                                 f"(rule {d.rule_id}, policy {self.policy.name})", rule=d.rule_id)
        return rec

    def _bad(self, conn: socket.socket, seen: dict[str, str], status: int, rule: str,
             reason: str) -> ConnectionRecord:
        return self._refuse(conn, ConnectionRecord(seen["target"], seen["method"], Decision("deny", rule, reason),
                                                   status=status))

    def _serve(self, conn: socket.socket, seen: dict[str, str]) -> ConnectionRecord | None:
        try:
            head, complete = _read_head(conn, self.head_timeout_s)
        except OSError:
            return None
        if not head:
            return None  # connected and said nothing: no request, no decision
        header_block, _, body = head.partition(b"\r\n\r\n")
        lines = header_block.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        seen["method"] = printable(parts[0].upper(), 16)
        if len(parts) > 1:
            seen["target"] = printable(parts[1], SHOWN_TARGET)
        if not complete:
            if len(head) >= MAX_HEAD:
                return self._bad(conn, seen, 431, "proxy.bad-request",
                                 f"the request head is longer than {MAX_HEAD} bytes")
            return self._bad(conn, seen, 400, "proxy.bad-request", "the request head ended before its blank line")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/"):
            return self._bad(conn, seen, 400, "proxy.bad-request",
                             f"bad request line {printable(lines[0], SHOWN_TARGET)!r}")
        method, uri = parts[0].upper(), parts[1]
        target: str | None = uri
        request = b""
        if method != "CONNECT":
            target, request = _plain_http(method, uri, lines[1:], parts[2], body)
            if target is None:
                return self._bad(conn, seen, 400, "proxy.bad-request", "the egress proxy needs an absolute http:// URL")
        assert target is not None
        why = bad_target(target)
        if why is not None:
            return self._bad(conn, seen, 400, "proxy.bad-target", why)
        rec = ConnectionRecord(_norm(target), method, self.decide(target))
        seen["target"] = rec.target
        upstream: socket.socket | None = None
        if not rec.decision.allowed:
            rec.status = 403
        else:
            upstream, rec.decision, rec.status = self._connect_upstream(rec.target, rec.decision)
        if upstream is None:
            return self._refuse(conn, rec)
        with self._lock:
            self._active.add(upstream)
        try:
            if method == "CONNECT":
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(request)
                rec.bytes_up += len(request)
            up, down = _splice(conn, upstream)
            rec.bytes_up += up
            rec.bytes_down += down
        except OSError as exc:
            rec.error = str(exc)
        finally:
            upstream.close()
            with self._lock:
                self._active.discard(upstream)
        return rec

    def _finish(self, rec: ConnectionRecord) -> None:
        if self.on_record is None:
            return
        with self._lock:  # under the lock: close() cannot end the queue between the check and the put
            late = self._records_closed
            if not late:
                if self._recorder is None:
                    self._recorder = threading.Thread(target=self._record_loop, name="lm-egress-records",
                                                      daemon=True)
                    self._recorder.start()
                self._records.put(rec)  # blocks while RECORD_QUEUE records wait: backpressure
                return
        try:  # a handler that outlived close(): nobody reads the queue any more
            self.on_record(rec)
        except Exception:  # noqa: BLE001
            pass

    def _record_loop(self) -> None:
        assert self.on_record is not None
        while (rec := self._records.get()) is not None:
            try:
                self.on_record(rec)
            except Exception:  # noqa: BLE001 - a failed audit write must not stop the records after it
                pass

    def close(self) -> None:
        """Stop accepting, cut open tunnels, and wait (a few seconds at most) for their audit records."""
        self._closed.set()
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        self._thread.join(timeout=2)
        with self._lock:
            active, handlers = list(self._active), list(self._handlers)
        for sock in active:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for t in handlers:
            t.join(timeout=max(deadline - time.monotonic(), 0.01))
        with self._lock:
            recorder, self._records_closed = self._recorder, True
        if recorder is not None:  # every record handed over so far is written before close returns
            self._records.put(None)
            recorder.join(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EgressProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bad_target(target: str) -> str | None:
    """Why `target` is not a `host:port` the proxy will look at, or None. Checked before any decision,
    so a name the resolver would choke on (bad IDNA, an empty or 64-character label) never reaches it."""
    if len(target) > MAX_TARGET:
        return f"the target is {len(target)} characters long (at most {MAX_TARGET})"
    if has_unsafe(target):
        return "the target holds control characters"
    if not target.isascii():
        return "the host name is not ASCII (send its IDNA xn-- form)"
    host, port = split_host_port(target)
    if port is None or not 0 < port < 65536:
        return "the target is not host:port with a port from 1 to 65535"
    if target.startswith("["):
        return None if ":" in host and is_ip_literal(host) else "a bracketed host must be an IPv6 address"
    if is_ip_literal(host):
        return None
    name = host.lower()
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253:
        return "the host name is empty or longer than 253 characters"
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            return (f"the host name has an empty label, a label longer than 63 characters, or characters "
                    f"a host name cannot hold ({printable(label, 70)!r})")
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError as exc:
                return f"{label!r} is not valid IDNA ({printable(str(exc), 120)})"
    return None


def _norm(target: str) -> str:
    host, port = split_host_port(target.strip())
    host = host.lower().rstrip(".")
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _resolve(host: str, port: int) -> list[str]:
    """The host's addresses; socket.gaierror (EAI_*), UnicodeError (IDNA) and OSError propagate."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _read_head(conn: socket.socket, timeout_s: float = HEAD_TIMEOUT_S) -> tuple[bytes, bool]:
    """(what came before the blank line ends the head, or at most MAX_HEAD bytes; whether it ended).
    The whole head must arrive within `timeout_s` (a trickle of bytes does not extend it)."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        conn.settimeout(left)
        try:
            chunk = conn.recv(8192)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    conn.settimeout(None)
    return data, b"\r\n\r\n" in data


def _plain_http(method: str, uri: str, headers: list[str], version: str, body: bytes) -> tuple[str | None, bytes]:
    if not uri.lower().startswith("http://"):
        return None, b""
    rest = uri[7:]
    hostport, slash, path = rest.partition("/")
    target = hostport if ":" in hostport.rsplit("]", 1)[-1] else f"{hostport}:80"
    kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in
            ("proxy-connection", "proxy-authorization", "connection", "keep-alive")]
    head = f"{method} {slash}{path or ''} {version}\r\n" + "".join(f"{h}\r\n" for h in kept)
    head += "Connection: close\r\n\r\n"
    return target, head.encode("latin-1") + body


def _reply(conn: socket.socket, status: int, text: str, rule: str | None = None) -> None:
    body = (printable(text) + "\n").encode()
    reason = _STATUS.get(status, "Error")
    extra = f"X-Loopmeter-Rule: {printable(rule)}\r\n" if rule else ""
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    try:
        conn.sendall(head.encode() + body)
    except OSError:
        pass


def _splice(a: socket.socket, b: socket.socket) -> tuple[int, int]:
    """Copy both ways until both sides close; returns (bytes a->b, bytes b->a)."""
    counts = [0, 0]

    def pump(src: socket.socket, dst: socket.socket, i: int) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                counts[i] += len(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    t = threading.Thread(target=pump, args=(b, a, 1), daemon=True)
    t.start()
    pump(a, b, 0)
    t.join()
    return counts[0], counts[1]
