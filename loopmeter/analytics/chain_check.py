"""Verify the audit chain in a child process: hashing a long chain would hold the caller's GIL.

Importing this module costs nothing (no SQLAlchemy, no pandas), so `report` starts the check
first and the child works while the parent loads the rest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def start(db_url: str, *, nice: int = 0) -> subprocess.Popen[str]:
    """`nice` > 0 lowers the child's CPU priority, for a check that must not slow a screen being drawn."""
    return subprocess.Popen([sys.executable, "-m", "loopmeter.analytics.chain_check", db_url,
                             *(["--nice", str(nice)] if nice else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout_s: float = 600) -> dict[str, Any]:
    """The child's chain_status, or status "unavailable" with why."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            raise ValueError((err or "").strip().splitlines()[-1:] or f"exit {proc.returncode}")
        return dict(json.loads(out))
    except (subprocess.SubprocessError, ValueError) as exc:
        proc.kill()
        return {"status": "unavailable", "detail": f"verify failed: {exc}", "records": None, "seconds": None}


def _same_store(a: str, b: str) -> bool:
    from pathlib import Path

    if a.startswith("sqlite:///") and b.startswith("sqlite:///"):
        return Path(a.removeprefix("sqlite:///")).resolve() == Path(b.removeprefix("sqlite:///")).resolve()
    return a == b


def anchored_status(store: Any, db_url: str) -> dict[str, Any]:
    """chain_status, plus the anchor and anchor copy of the settings when `db_url` is their store and the
    files exist: a record past the anchored head, a truncated or rewritten tail are reported here too.
    (Only `loopmeter audit verify` treats a missing anchor as a failure.)"""
    import time

    from loopmeter.analytics.policy import chain_status
    from loopmeter.config import load_settings
    from loopmeter.policies.audit import verify_chain

    settings = load_settings()
    anchors = [p if p is not None and p.is_file() else None for p in (settings.audit_anchor, settings.audit_anchor_copy)]
    if not _same_store(db_url, settings.db_url) or anchors == [None, None]:
        return chain_status(store)
    t0 = time.perf_counter()
    try:
        result = verify_chain(store, *anchors)
    except Exception as exc:  # noqa: BLE001 - the dashboard reports it, it does not crash
        return {"status": "unavailable", "detail": f"verify failed: {exc}", "records": None,
                "seconds": time.perf_counter() - t0}
    detail = None
    if not result.ok:
        detail = (f"first bad record: seq {result.first_bad_seq} ({result.reason})" if result.first_bad_seq
                  else result.reason)
    return {"status": "ok" if result.ok else "broken", "detail": detail, "records": result.records,
            "seconds": round(time.perf_counter() - t0, 3)}


def _main(argv: list[str]) -> None:
    import os

    from loopmeter.store import open_store

    if len(argv) > 2 and argv[1] == "--nice" and hasattr(os, "nice"):
        os.nice(int(argv[2]))
    store = open_store(argv[0], migrate=False)
    try:
        print(json.dumps(anchored_status(store, argv[0]), default=str))
    finally:
        store.dispose()


if __name__ == "__main__":
    _main(sys.argv[1:])
