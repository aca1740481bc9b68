"""Where eval cells (and `loopmeter run` attempts) run: `local` (a thread pool in this process, the default) or `ray` (a Ray cluster).

`base.py` holds the protocol, the cell's travelling spec and `run_cell`, the one function both
executors call; `local.py` and `ray_executor.py` the two implementations. Only `ray_executor.py`
imports ray, and only when a command asks for it (docs/deployment.md, "Many machines").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopmeter.executors.base import Executor

EXECUTORS = ("local", "ray")


def make_executor(name: str, *, store: Any, concurrency: int, ray_address: str | None = None) -> Executor:
    """The executor called NAME; `ray` without the `loopmeter[ray]` extra is one clear error."""
    from loopmeter.errors import LoopmeterError

    if name == "local":
        from loopmeter.executors.local import LocalExecutor

        return LocalExecutor(store, concurrency)
    if name == "ray":
        from loopmeter.executors.ray_executor import RayExecutor

        return RayExecutor(store, address=ray_address)
    raise LoopmeterError(f"unknown executor '{name}'", hint="--executor local or --executor ray")


def make_attempt_executor(name: str | None, *, store: Any, ray_address: str | None = None) -> Any:
    """Where `loopmeter run`/`resume` run their attempts: None for `local` (this process, as always),
    else an object with run_attempt(runtime, attempt_id, payload) and close()."""
    from loopmeter.errors import LoopmeterError

    if name in (None, "local"):
        return None
    if name == "ray":
        from loopmeter.executors.ray_executor import RayAttempts

        return RayAttempts(store, address=ray_address)
    raise LoopmeterError(f"unknown executor '{name}'", hint="--executor local or --executor ray")
