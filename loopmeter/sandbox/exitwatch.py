"""Which processes in a sandbox died of SIGXFSZ (the file-size limit), wherever they were in the tree.

A grandchild killed at RLIMIT_FSIZE while its parent carries on leaves no trace in the command's
exit code (dash does not even print a message). The kernel announces every fork and exit on the
proc connector (netlink). One listener thread per loopmeter process follows them in order: a
command's launcher is registered when it starts, every process forked by a registered process joins
its tree, an exit leaves it, and an exit by SIGXFSZ is counted for that tree's command. Following
the order of events, not /proc, makes the attribution exact however late the thread runs (the
parent of a killed child may be gone by then). A classic BPF filter on the socket passes only fork
and exit events, and nothing at all while no command is watched (an idle loopmeter process is never
woken by the host's forks); forks made before the launcher was registered are replayed from a ring.

Listening needs CAP_NET_ADMIN in the initial namespaces (root on the host, as in CI). Elsewhere
`watch()` returns None, `probe()` says why, and only a top-level exit 153 is recorded. Events the
socket dropped (a burst beyond its 4 MiB buffer) are counted in `lost`.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import re
import select
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC = 11, 1, 1
PROC_CN_MCAST_LISTEN, NLMSG_DONE = 1, 3
PROC_EVENT_FORK, PROC_EVENT_EXIT = 0x00000001, 0x80000000
SO_ATTACH_FILTER, SO_RCVBUFFORCE = 26, 33
SIGXFSZ = 25
# offsets in a message: nlmsghdr (16) + cn_msg (20) + proc_event {what, cpu, u64 ts, data}; data is
# fork {parent_pid, parent_tgid, child_pid, child_tgid} or exit {pid, tgid, exit_code, exit_signal, ...}
_WHAT, _DATA = 36, 52
_RING = 4096

class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _attach(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    arr = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, ctypes.string_at(ctypes.addressof(fprog),
                                                                         ctypes.sizeof(fprog)))


DROP_ALL = [(0x06, 0, 0, 0)]  # while no command is watched, the host's forks never wake this process


def _bpf_fork_and_exit() -> list[tuple[int, int, int, int]]:
    """Pass fork and exit events, drop the rest (exec, uid, comm...). BPF word loads are big-endian and
    the message is in host order: compare with htonl'd constants."""
    ld_w, jeq, ret = 0x20, 0x15, 0x06
    return [
        (ld_w, 0, 0, _WHAT),
        (jeq, 1, 0, socket.htonl(PROC_EVENT_EXIT)),
        (jeq, 0, 1, socket.htonl(PROC_EVENT_FORK)),
        (ret, 0, 0, 0xFFFF),
        (ret, 0, 0, 0),
    ]


@dataclass
class ExitWatch:
    """One sandboxed command: the processes of its tree die here; the names of those killed by SIGXFSZ."""

    killed: list[str] = field(default_factory=list)
    _listener: _Listener | None = None

    def add_pid(self, pid: int) -> None:
        """The command's launcher, once started: it and everything it forks (already, or later) is this tree."""
        listener = self._listener
        if listener is not None:
            with listener.lock:
                listener.drain()
                listener.tree[pid] = self
                born = False
                for kind, a, b in listener.ring:  # what happened since the launcher's birth, in order
                    if not born:
                        born = kind == "fork" and b == pid  # earlier events may be an older holder of the pid
                    elif kind == "fork" and listener.tree.get(a) is self:
                        listener.tree[b] = self
                    elif kind == "exit" and listener.tree.get(a) is self:
                        del listener.tree[a]
                        if b & 0x7F == SIGXFSZ:
                            self.killed.append("?")

    def close(self) -> list[str]:
        """Handle every event announced so far, forget this tree, and return the names of the processes
        killed by SIGXFSZ."""
        listener = self._listener
        if listener is not None:
            with listener.lock:
                listener.drain()
                for pid in [p for p, w in listener.tree.items() if w is self]:
                    del listener.tree[pid]
                listener.watches -= 1
                if listener.watches == 0:
                    try:
                        _attach(listener.sock, DROP_ALL)
                    except OSError:
                        pass
            self._listener = None
        return list(self.killed)


class _Listener:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tree: dict[int, ExitWatch] = {}  # live process (tgid) -> the command whose tree it is in
        self.ring: collections.deque[tuple[str, int, int]] = collections.deque(maxlen=_RING)
        self.watches = 0
        self.lost = 0
        self.seen: collections.deque[int] = collections.deque(maxlen=64)  # SIGXFSZ deaths, for probe()
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:
            _attach(sock, DROP_ALL)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((0, CN_IDX_PROC))
            op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
            cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
            sock.send(struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, 0) + cn)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        threading.Thread(target=self._loop, name="lm-exitwatch", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                select.select([self.sock], [], [])
            except (OSError, ValueError):
                return
            with self.lock:
                self.drain()

    def drain(self) -> None:
        """Handle every queued message (caller holds the lock): a message is taken off the socket only
        under the lock, so after a drain everything announced before it has been handled."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the queue overflowed: events were missed
                    self.lost += 1
                    continue
                return
            off = 0
            while off + 16 <= len(data):
                length = struct.unpack_from("=I", data, off)[0]
                if length < 16:
                    break
                self._handle(data[off:off + length])
                off += (length + 3) & ~3

    def _handle(self, msg: bytes) -> None:
        if len(msg) < _DATA + 16:
            return
        what = struct.unpack_from("=I", msg, _WHAT)[0]
        if what == PROC_EVENT_FORK:
            _, ptgid, _, ctgid = struct.unpack_from("=IIII", msg, _DATA)
            if ptgid == ctgid:
                return  # a new thread, not a new process
            if self.watches:
                self.ring.append(("fork", ptgid, ctgid))
            owner = self.tree.get(ptgid)
            if owner is not None:
                self.tree[ctgid] = owner
        elif what == PROC_EVENT_EXIT:
            pid, tgid, code = struct.unpack_from("=III", msg, _DATA)
            if pid != tgid:
                return  # a thread; the process's own exit comes with pid == tgid
            if self.watches:
                self.ring.append(("exit", tgid, code))
            owner = self.tree.pop(tgid, None)
            if code & 0x7F == SIGXFSZ:
                self.seen.append(tgid)
                if owner is not None:
                    # comm is the sandbox's to choose: short and plain; "?" once the zombie is reaped
                    name = re.sub(r"[^A-Za-z0-9._+-]", "?", _read(f"/proc/{tgid}/comm").strip()[:16])
                    owner.killed.append(name or "?")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


_lock = threading.Lock()
_state: dict[str, object] = {}


def _listener() -> _Listener | None:
    with _lock:
        if "listener" not in _state:
            try:
                _state["listener"] = _Listener()
            except OSError as exc:
                _state["listener"] = None
                _state["error"] = f"{exc.strerror or exc}"
        got = _state["listener"]
        return got if isinstance(got, _Listener) else None


def watch() -> ExitWatch | None:
    """Register one command (call `add_pid` with its launcher's pid once started, `close` when it ended);
    None where the kernel's events cannot be read."""
    listener = _listener()
    if listener is None:
        return None
    with listener.lock:
        if listener.watches == 0:
            _attach(listener.sock, _bpf_fork_and_exit())
        listener.watches += 1
    return ExitWatch(_listener=listener)


def probe(timeout_s: float = 5.0) -> tuple[bool, str]:
    """For the doctors: a grandchild dies of SIGXFSZ while its parent goes on; is it attributed?"""
    w = watch()
    if w is None:
        return False, (f"cannot follow the kernel's process events ({_state.get('error')}; needs root): a child "
                       "killed at the file-size limit is recorded only when the command itself dies of it")
    with tempfile.TemporaryDirectory(prefix="lm-xfsz-") as tmp:
        proc = subprocess.Popen(["sh", "-c", f"ulimit -f 0; sh -c 'echo x > {tmp}/f'; exit 0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w.add_pid(proc.pid)
        code = proc.wait()
    deadline = time.monotonic() + timeout_s
    while code == 0 and not w.killed and time.monotonic() < deadline:
        time.sleep(0.01)  # the events are already queued; the listener thread may be busy
    killed = w.close()
    if code != 0:
        return False, f"the probe failed (exit {code})"
    if not killed:
        return False, "the kernel's process events are not delivered here: file-size kills of child processes are missed"
    return True, "kernel process events (proc connector): a child killed at the file-size limit is recorded"
