"""The store: SQLModel tables, engine and migrations. Only this package writes records.

Names load on first use (SQLAlchemy and SQLModel take ~0.2 s to import), so that
`loopmeter.store.sqlite_writer`, used by ingest worker processes, imports neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopmeter.store import rollup
    from loopmeter.store.engine import Store, as_utc, default_store, insert_rows, open_store
    from loopmeter.store.migrations import SCHEMA_VERSION
    from loopmeter.store.models import (
        Attempt,
        Audit,
        EvalResult,
        IngestCursor,
        Iteration,
        Outcome,
        Run,
        Span,
        Usage,
        UsageHour,
    )

_WHERE = {
    "rollup": None,
    "SCHEMA_VERSION": "migrations",
    **dict.fromkeys(("Store", "as_utc", "default_store", "insert_rows", "open_store"), "engine"),
    **dict.fromkeys(("Attempt", "Audit", "EvalResult", "IngestCursor", "Iteration", "Outcome", "Run", "Span",
                     "Usage", "UsageHour"), "models"),
}

__all__ = [
    "SCHEMA_VERSION", "Attempt", "Audit", "EvalResult", "IngestCursor", "Iteration", "Outcome", "Run", "Span",
    "Store", "Usage", "UsageHour", "as_utc", "default_store", "insert_rows", "open_store", "rollup",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name, "")
    if module == "":
        raise AttributeError(f"module 'loopmeter.store' has no attribute {name!r}")
    if module is None:
        return importlib.import_module(f"loopmeter.store.{name}")
    value = getattr(importlib.import_module(f"loopmeter.store.{module}"), name)
    globals()[name] = value
    return value
