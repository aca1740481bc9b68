"""The Overview's first figure, computed in a forked process while the dashboard starts.

Most of `loopmeter dash`'s first second is imports: SQLAlchemy and the store's models, pandas
and numpy for the figures, Textual for the screen. So `dash` forks before importing any of
them: the child computes the Spend box with `spend_box.compute`, the function every refresh and
`report` read too, which needs the stdlib alone on a SQLite store, and sends it back as JSON;
meanwhile the parent starts the screen without touching the store, shows the figure when it
arrives, and only then opens the store and loads the rest in-process.
A child that fails or dies costs nothing but the wait: the parent then computes it itself.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any, NoReturn

from loopmeter.analytics.filters import Filters

MAX_BYTES = 1 << 20  # the Spend box's figures are a few hundred bytes


class FirstFigures:
    """One forked computation of the Spend box for `filters`; `take()` waits for it once."""

    def __init__(self, filters: Filters, pid: int, fd: int):
        self.filters = filters
        self.pid = pid  # the child's
        self._fd: int | None = fd
        self._running = True
        self._lock = threading.Lock()

    @classmethod
    def start(cls, db_url: str, filters: Filters) -> FirstFigures:
        """Fork the child. Call it before the process opens the store or starts any thread."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: compute, write, exit without running the parent's exit handlers
            os.close(read_fd)
            _child(write_fd, db_url, filters)
        os.close(write_fd)
        return cls(filters, pid, read_fd)

    def take(self, filters: Filters) -> dict[str, Any] | None:
        """The child's Spend box (`spend_box.compute`) when computed for `filters`; None once taken, for
        other filters, or when the child failed (compute it in-process then). Blocks until the child ends."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as pipe:
            raw = pipe.read(MAX_BYTES + 1)
        self._reap()
        if filters != self.filters or not raw or len(raw) > MAX_BYTES:
            return None
        try:
            answer = json.loads(raw)
        except ValueError:
            return None
        return answer.get("spend") if isinstance(answer, dict) else None

    def close(self) -> None:
        """Stop a child still computing (the dashboard quit first) and release its pipe."""
        with self._lock:
            fd, self._fd = self._fd, None
            if self._running:  # also while `take` waits for it: its read then ends
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if fd is not None:
            os.close(fd)
        self._reap()

    def _reap(self) -> None:
        with self._lock:
            running, self._running = self._running, False
        if running:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


def _child(write_fd: int, db_url: str, filters: Filters) -> NoReturn:
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):  # the terminal belongs to the dashboard
            os.dup2(devnull, std)
        payload = json.dumps({"spend": compute(db_url, filters)}).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
        code = 0
    finally:
        os._exit(code)


def compute(db_url: str, filters: Filters) -> dict[str, Any]:
    """The Overview's Spend box (`spend_box.compute`) for `filters`, from the store at `db_url`."""
    from loopmeter.analytics import spend_box
    from loopmeter.analytics.sums import Db

    db = Db(db_url)
    try:
        return spend_box.compute(db, filters).box
    finally:
        db.close()
