"""Records every file opened under the data directories (data-restricted policy).

inotify watches inodes, so opens made inside the sandbox through its read-only bind
mounts are seen from the host. Each distinct file is reported once per command.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path

IN_OPEN = 0x00000020
IN_ISDIR = 0x40000000
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class DataWatcher:
    def __init__(self, roots: list[Path], on_open: Callable[[str], None]):
        self.on_open = on_open
        self.seen: set[str] = set()
        self.overflowed = False
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._dirs: dict[int, str] = {}
        for root in roots:
            for dirpath, _dirnames, _files in os.walk(root):
                wd = _libc.inotify_add_watch(self._fd, os.fsencode(dirpath), IN_OPEN)
                if wd >= 0:
                    self._dirs[wd] = dirpath
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="lm-datawatch", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                raise
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                    continue
                if mask & IN_ISDIR or not name or wd not in self._dirs:
                    continue
                path = os.path.join(self._dirs[wd], os.fsdecode(name))
                if path not in self.seen:
                    self.seen.add(path)
                    self.on_open(path)

    def _loop(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._fd in ready:
                self._drain()
            if self._stop_r in ready:
                self._drain()
                return

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
