"""The `local` executor: cells run on threads of this process (the default)."""

from __future__ import annotations

import socket
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from loopmeter.executors.base import CellSpec, run_cell

if TYPE_CHECKING:
    from loopmeter.evals.runner import CellResult


class LocalExecutor:
    name = "local"

    def __init__(self, store: Any, concurrency: int):
        self.store = store
        self.node = socket.gethostname()
        self.pool = ThreadPoolExecutor(max_workers=max(concurrency, 1), thread_name_prefix="eval")

    def prepare(self, specs: list[CellSpec]) -> list[CellSpec]:
        return specs

    def submit(self, spec: CellSpec) -> Future[CellResult]:
        return self.pool.submit(run_cell, spec, self.store, node=self.node)

    def wait(self, handles: list[Any], timeout: float | None = None) -> tuple[list[tuple[Any, CellResult]], list[Any]]:
        finished, running = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [(f, f.result()) for f in finished if not f.cancelled()], list(running)

    def cancel(self, handles: list[Any]) -> None:
        for fut in handles:  # a cell already running ends on its own; one not started yet never starts
            fut.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
