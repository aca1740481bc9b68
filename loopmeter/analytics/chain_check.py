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


def _main(argv: list[str]) -> None:
    import os

    from loopmeter.analytics.policy import chain_status
    from loopmeter.store import open_store

    if len(argv) > 2 and argv[1] == "--nice" and hasattr(os, "nice"):
        os.nice(int(argv[2]))
    store = open_store(argv[0], migrate=False)
    try:
        print(json.dumps(chain_status(store), default=str))
    finally:
        store.dispose()


if __name__ == "__main__":
    _main(sys.argv[1:])
