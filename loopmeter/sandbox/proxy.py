"""The egress proxy on the host: HTTP CONNECT and plain HTTP, on a Unix socket that is
bind-mounted into the sandbox. Each connection is decided by the policy (plus per-call
`extra_allow`), refused with 403 and the reason, and audited with host, port and bytes.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopmeter.policies.policy import Decision, Policy, is_ip_literal, split_host_port

MAX_HEAD = 64 * 1024


@dataclass
class ConnectionRecord:
    target: str
    method: str
    decision: Decision
    bytes_up: int = 0
    bytes_down: int = 0
    error: str | None = None


def _private(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified


class EgressProxy:
    """One proxy per sandboxed command; `on_record` is called once per connection when it ends."""

    def __init__(self, policy: Policy, actor: str, extra_allow: Sequence[str] = (),
                 on_record: Callable[[ConnectionRecord], None] | None = None,
                 resolve: Callable[[str, int], list[str]] | None = None):
        self.policy = policy
        self.actor = actor
        self.extra_allow = {_norm(t) for t in extra_allow}
        self.on_record = on_record
        self.resolve = resolve or _resolve
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
        self._thread = threading.Thread(target=self._accept, name="lm-egress-proxy", daemon=True)
        self._thread.start()

    # -- decisions ------------------------------------------------------------
    def decide(self, target: str) -> Decision:
        target = _norm(target)
        if target in self.extra_allow:
            return Decision("allow", "extra_allow", f"{target} was allowed for this command by the caller")
        decision = self.policy.decide("connect", target, self.actor)
        return decision

    def _connect_upstream(self, target: str, decision: Decision) -> tuple[socket.socket | None, Decision]:
        host, port = split_host_port(target)
        if port is None:
            return None, Decision("deny", "network.no-port", f"{target} has no port")
        explicit = decision.rule_id in ("extra_allow", "network.allow_local")
        addrs = [host] if is_ip_literal(host) else self.resolve(host, port)
        if not addrs:
            return None, Decision("deny", "network.dns", f"{host} does not resolve")
        if not explicit and any(_private(a) for a in addrs):
            return None, Decision("deny", "network.private-address",
                                  f"{host} resolves to a private or loopback address")
        last: OSError | None = None
        for addr in addrs:
            try:
                return socket.create_connection((addr, port), timeout=15), decision
            except OSError as exc:
                last = exc
        return None, Decision("deny", "network.unreachable", f"cannot reach {target}: {last}")

    # -- serving ----------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve_one, args=(conn,), daemon=True)
            with self._lock:
                self._active.add(conn)
                self._handlers.add(t)
            t.start()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        finally:
            with self._lock:
                self._active.discard(conn)
                self._handlers.discard(threading.current_thread())

    def _handle(self, conn: socket.socket) -> None:
        try:
            head = _read_head(conn)
        except OSError:
            conn.close()
            return
        if not head:
            conn.close()
            return
        header_block, _, body = head.partition(b"\r\n\r\n")
        lines = header_block.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) < 3:
            _reply(conn, 400, "bad request line")
            conn.close()
            return
        method, uri = parts[0].upper(), parts[1]
        target: str | None = uri
        request = b""
        if method != "CONNECT":
            target, request = _plain_http(method, uri, lines[1:], parts[2], body)
            if target is None:
                _reply(conn, 400, "the egress proxy needs an absolute http:// URL")
                conn.close()
                return
        assert target is not None
        rec = ConnectionRecord(_norm(target), method, self.decide(target))
        upstream: socket.socket | None = None
        if rec.decision.allowed:
            upstream, rec.decision = self._connect_upstream(rec.target, rec.decision)
        if upstream is not None:
            with self._lock:
                self._active.add(upstream)
        if upstream is None:
            _reply(conn, 403, f"loopmeter egress proxy denied {rec.target}: {rec.decision.reason} "
                              f"(rule {rec.decision.rule_id}, policy {self.policy.name})",
                   rule=rec.decision.rule_id)
            conn.close()
            self._finish(rec)
            return
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
            conn.close()
            upstream.close()
            with self._lock:
                self._active.discard(upstream)
            self._finish(rec)

    def _finish(self, rec: ConnectionRecord) -> None:
        if self.on_record is not None:
            try:
                self.on_record(rec)
            except Exception:  # noqa: BLE001 - a failed audit write must not hang the client
                pass

    def close(self) -> None:
        """Stop accepting, cut open tunnels, and wait for their audit records."""
        self._closed.set()
        with self._lock:
            active, handlers = list(self._active), list(self._handlers)
        for sock in active:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in handlers:
            t.join(timeout=2)
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EgressProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _norm(target: str) -> str:
    host, port = split_host_port(target.strip())
    host = host.lower().rstrip(".")
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    conn.settimeout(30)
    while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
        chunk = conn.recv(8192)
        if not chunk:
            break
        data += chunk
    conn.settimeout(None)
    return data


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
    body = (text + "\n").encode()
    reason = {400: "Bad Request", 403: "Forbidden"}.get(status, "Error")
    extra = f"X-Loopmeter-Rule: {rule}\r\n" if rule else ""
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
