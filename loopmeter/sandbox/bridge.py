"""Runs inside the sandbox (as `python3 -I -S /run/loopmeter/bridge.py ...`): bridges loopback ports in the
sandbox's network namespace to the host's egress proxy through a bind-mounted Unix socket, then
runs the command and exits with its status. Only C-level stdlib modules (`_socket`, `_thread`),
which start about 5 ms faster than `socket` and `threading`.

argv: SOCKET PROXY_PORT FORWARDS -- CMD...   (FORWARDS: comma-separated "host:port" or "")
A forward listens on 127.0.0.1:PORT inside and tunnels each connection with CONNECT host:port,
so a URL like http://127.0.0.1:PORT works unchanged inside when the policy allows it.

At most MAX_CONNECTIONS connections are bridged at a time, over all listeners (two threads each:
threads count against the sandbox's process limit, and the host's proxy has a cap of its own).
Connections past that are still accepted at once, so the kernel's listen queue never overflows and
drops them, and wait, without a thread, until a bridged one ends; past MAX_WAITING more they are
answered `503` and closed, and the bridge says how many on stderr when the command ends.
"""

import _socket
import _thread
import os
import sys

MAX_CONNECTIONS = 64
MAX_WAITING = 512
REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n" \
          b"X-Loopmeter-Rule: bridge.max-connections\r\nContent-Length: 73\r\n\r\n" \
          b"loopmeter sandbox bridge: too many connections at once; this one refused\n"


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(_socket.SHUT_WR)
    except OSError:
        pass


def splice(a, b):
    """Copy both ways between the client `a` and the proxy `b`; returns when both directions have ended,
    with both sockets closed. Once the proxy's side has ended (a refusal, or the far end closed), the
    client's side is not waited for: its slot is free as soon as the answer is through."""
    other_done = _thread.allocate_lock()
    other_done.acquire()

    def other():
        try:
            pump(b, a)
            try:
                a.shutdown(_socket.SHUT_RD)  # ends pump(a, b) in the worker, however idle the client is
            except OSError:
                pass
        finally:
            other_done.release()

    try:
        _thread.start_new_thread(other, ())
    except RuntimeError:  # no thread to be had: drop this connection, keep serving
        a.close()
        b.close()
        return
    pump(a, b)
    other_done.acquire()
    a.close()
    b.close()


def upstream(sock_path):
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.connect(sock_path)
    return s


def handle_proxy(conn, sock_path):
    try:
        up = upstream(sock_path)
    except OSError:
        conn.close()
        return
    splice(conn, up)


def handle_forward(conn, sock_path, target):
    up = None
    try:
        up = upstream(sock_path)
        up.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = up.recv(4096)
            if not chunk:
                break
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        if b" 200 " not in status.split(b"\r\n", 1)[0] + b" ":
            # hand the proxy's refusal to the client as a plain HTTP answer
            conn.sendall(head)
            conn.close()
            up.close()
            return
        if rest:
            conn.sendall(rest)
    except OSError:
        conn.close()
        if up is not None:
            up.close()
        return
    splice(conn, up)


class Pool:
    """At most `size` workers; each bridges one connection at a time, then takes a waiting one."""

    def __init__(self, size):
        self.lock = _thread.allocate_lock()
        self.free = size
        self.waiting = []
        self.refused = 0

    def submit(self, conn, handler, args):
        with self.lock:
            if self.free == 0:
                if len(self.waiting) < MAX_WAITING:
                    self.waiting.append((conn, handler, args))
                    return
                self.refused += 1
                refuse = True
            else:
                self.free -= 1
                refuse = False
        if refuse:
            try:
                conn.sendall(REFUSED)
            except OSError:
                pass
            conn.close()
            return
        try:
            _thread.start_new_thread(self.work, (conn, handler, args))
        except RuntimeError:  # no thread to be had: this one is dropped, the slot comes back
            conn.close()
            with self.lock:
                self.free += 1

    def work(self, conn, handler, args):
        while True:
            try:
                handler(conn, *args)
            except Exception:  # noqa: BLE001 - one connection's failure must not cost a worker
                conn.close()
            with self.lock:
                if not self.waiting:
                    self.free += 1
                    return
                conn, handler, args = self.waiting.pop(0)


def serve(listener, pool, handler, *args):
    pause = _thread.allocate_lock()
    pause.acquire()
    while True:
        try:
            fd, _ = listener._accept()
        except OSError:  # out of descriptors, or the peer left before accept: wait a moment, go on
            pause.acquire(timeout=0.05)
            continue
        pool.submit(_socket.socket(fileno=fd), handler, args)


def listen(port):
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)  # a burst of connects is queued by the kernel, not dropped and retried
    return s


def main(argv):
    sock_path, proxy_port, forwards = argv[0], int(argv[1]), argv[2]
    cmd = argv[4:]
    # listen first (connections queue in the backlog), fork before any thread exists, then serve
    servers = [(listen(proxy_port), handle_proxy, (sock_path,))]
    for target in filter(None, forwards.split(",")):
        port = int(target.rsplit(":", 1)[1])
        if port != proxy_port:
            servers.append((listen(port), handle_forward, (sock_path, target)))
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            sys.stderr.write(f"loopmeter sandbox: cannot run {cmd[0]}: {exc.strerror}\n")
            os._exit(127)
    pool = Pool(MAX_CONNECTIONS)
    for listener, handler, args in servers:
        _thread.start_new_thread(serve, (listener, pool, handler, *args))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if pool.refused:
        sys.stderr.write(f"loopmeter sandbox bridge: {pool.refused} connections refused (more than "
                         f"{MAX_CONNECTIONS} open and {MAX_WAITING} waiting)\n")
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv[1:])
