"""Runs inside the sandbox (as `python3 -I -S -c <this file>`): bridges loopback ports in the
sandbox's network namespace to the host's egress proxy through a bind-mounted Unix socket, then
runs the command and exits with its status. Standard library only.

argv: SOCKET PROXY_PORT FORWARDS -- CMD...   (FORWARDS: comma-separated "host:port" or "")
A forward listens on 127.0.0.1:PORT inside and tunnels each connection with CONNECT host:port,
so a URL like http://127.0.0.1:PORT works unchanged inside when the policy allows it.
"""

import os
import socket
import sys
import threading


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def splice(a, b):
    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join()
    a.close()
    b.close()


def upstream(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
    try:
        up = upstream(sock_path)
        up.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nX-Loopmeter-Forward: 1\r\n\r\n".encode())
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
        return
    splice(conn, up)


def serve(listener, handler, *args):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handler, args=(conn, *args), daemon=True).start()


def listen(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s


def main(argv):
    sock_path, proxy_port, forwards = argv[0], int(argv[1]), argv[2]
    cmd = argv[4:]
    threading.Thread(target=serve, args=(listen(proxy_port), handle_proxy, sock_path), daemon=True).start()
    for target in filter(None, forwards.split(",")):
        port = int(target.rsplit(":", 1)[1])
        if port == proxy_port:
            continue
        threading.Thread(target=serve, args=(listen(port), handle_forward, sock_path, target), daemon=True).start()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            sys.stderr.write(f"loopmeter sandbox: cannot run {cmd[0]}: {exc.strerror}\n")
            os._exit(127)
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
