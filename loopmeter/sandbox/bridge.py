"""Runs inside the sandbox (as `python3 -I -S /run/loopmeter/bridge.py ...`): bridges loopback ports in the
sandbox's network namespace to the host's egress proxy through a bind-mounted Unix socket, then
runs the command and exits with its status. Only C-level stdlib modules (`_socket`, `_thread`),
which start about 5 ms faster than `socket` and `threading`.

argv: SOCKET PROXY_PORT FORWARDS -- CMD...   (FORWARDS: comma-separated "host:port" or "")
A forward listens on 127.0.0.1:PORT inside and tunnels each connection with CONNECT host:port,
so a URL like http://127.0.0.1:PORT works unchanged inside when the policy allows it.

At most MAX_CONNECTIONS connections are bridged at a time, over all listeners: the next one waits in
the listener's queue until one ends (two threads each; threads count against the sandbox's process
limit, so a flood of connections must not take the bridge down). The host's proxy has its own cap.
"""

import _socket
import _thread
import os
import sys

MAX_CONNECTIONS = 64


def pump(src, dst, finished):
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
    finished()


def splice(a, b, done):
    lock = _thread.allocate_lock()
    left = [2]

    def finished():
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            a.close()
            b.close()
            done()

    try:
        _thread.start_new_thread(pump, (b, a, finished))
    except RuntimeError:  # no thread to be had: drop this connection, keep serving
        a.close()
        b.close()
        done()
        return
    pump(a, b, finished)


def upstream(sock_path):
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.connect(sock_path)
    return s


def handle_proxy(conn, done, sock_path):
    try:
        up = upstream(sock_path)
    except OSError:
        conn.close()
        done()
        return
    splice(conn, up, done)


def handle_forward(conn, done, sock_path, target):
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
            done()
            return
        if rest:
            conn.sendall(rest)
    except OSError:
        conn.close()
        if up is not None:
            up.close()
        done()
        return
    splice(conn, up, done)


class Slots:
    """A counting semaphore from C-level parts: a pipe holding one byte per free slot."""

    def __init__(self, n):
        self.r, self.w = os.pipe()
        os.write(self.w, b"x" * n)

    def take(self):
        while True:
            try:
                os.read(self.r, 1)
                return
            except InterruptedError:
                continue

    def give(self):
        os.write(self.w, b"x")


def serve(listener, slots, handler, *args):
    while True:
        slots.take()  # at the cap, stop accepting: new connections wait in the listen queue
        try:
            fd, _ = listener._accept()
        except OSError:
            slots.give()
            continue
        conn = _socket.socket(fileno=fd)
        once = [slots.give]

        def done(once=once):
            if once:
                once.pop()()

        try:
            _thread.start_new_thread(handler, (conn, done, *args))
        except RuntimeError:
            conn.close()
            done()


def listen(port):
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
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
    slots = Slots(MAX_CONNECTIONS)
    for listener, handler, args in servers:
        _thread.start_new_thread(serve, (listener, slots, handler, *args))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv[1:])
