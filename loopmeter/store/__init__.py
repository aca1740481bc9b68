"""The store: SQLModel tables, engine and migrations. Only this package writes records."""

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
)

__all__ = [
    "SCHEMA_VERSION",
    "Attempt",
    "Audit",
    "EvalResult",
    "IngestCursor",
    "Iteration",
    "Outcome",
    "Run",
    "Span",
    "Store",
    "Usage",
    "default_store",
    "insert_rows",
    "as_utc",
    "open_store",
]
