"""Usage from the agents' own logs on disk: Claude Code, Codex and Gemini CLI.

    from loopmeter.telemetry.ingest import ingest
    report = ingest(store)                       # default places, CLAUDE_CONFIG_DIR, CODEX_HOME, GEMINI_DATA_DIR
    report = ingest(store, paths=[Path("logs")])  # or given files and folders

Reading is incremental (see runner.py); parsers live in one module per source.
"""

from loopmeter.telemetry.ingest.runner import (
    SOURCES,
    IngestReport,
    discover,
    ingest,
    load_cursors,
    plan,
    run,
)

__all__ = ["SOURCES", "IngestReport", "discover", "ingest", "load_cursors", "plan", "run"]
