"""Faults the scripted vendor admin servers share: scripted 429s (with Retry-After) and 5xx
answers for the next requests, and a helper to split a list into numbered pages.

    server.fail_next(429, times=1, retry_after="1")   # the next request is throttled once
    server.fail_next(503, times=2)                    # the next two get a 503
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class Faults:
    """A queue of scripted failures, taken one per request before any real answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[int, str | None]] = deque()
        self.answered: list[int] = []  # every fault status sent, in order

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        with self._lock:
            self._queue.extend([(status, retry_after)] * times)

    def take(self) -> tuple[int, dict[str, str]] | None:
        """The next scripted failure (status, headers), or None to answer normally."""
        with self._lock:
            if not self._queue:
                return None
            status, retry_after = self._queue.popleft()
            self.answered.append(status)
        return status, ({"Retry-After": retry_after} if retry_after is not None else {})


def page_of(items: list[Any], page: int, page_size: int) -> tuple[list[Any], int]:
    """Items on 1-based `page` of `page_size`, and the number of pages (at least 1)."""
    pages = max(1, -(-len(items) // page_size))
    start = (page - 1) * page_size
    return items[start:start + page_size], pages
