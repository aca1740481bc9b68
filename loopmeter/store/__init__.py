"""The store: SQLModel tables, engine and migrations. Only this package writes records."""

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

__all__ = [
    "rollup",
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
    "UsageHour",
    "default_store",
    "insert_rows",
    "as_utc",
    "open_store",
]
