"""The audit chain: intact -> verify ok; edited, deleted, reordered, truncated copies -> first bad seq."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from loopmeter.policies.audit import AuditLog, verify_chain
from loopmeter.store import open_store
from tests.conftest import loopmeter_cmd


def _fill(db: Path, anchor: Path, n: int = 6) -> None:
    store = open_store(f"sqlite:///{db}")
    log = AuditLog(store, anchor)
    for i in range(n):
        log.append(layer="proxy", action="connect", target=f"host{i}.example:443", decision="deny" if i % 2 else "allow",
                   rule_id="r", detail={"bytes_up": i})
    store.dispose()


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, Path]:
    db, anchor = tmp_path / "orig.db", tmp_path / "orig.anchor"
    _fill(db, anchor)
    return db, anchor


def _tampered(chain: tuple[Path, Path], tmp_path: Path, sql: list[str]) -> tuple[Path, Path]:
    db, anchor = tmp_path / "copy.db", tmp_path / "copy.anchor"
    shutil.copy(chain[0], db)
    shutil.copy(chain[1], anchor)
    conn = sqlite3.connect(db)
    for statement in sql:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return db, anchor


def _verify(db: Path, anchor: Path):
    store = open_store(f"sqlite:///{db}")
    try:
        return verify_chain(store, anchor)
    finally:
        store.dispose()


def test_intact_chain_verifies(chain) -> None:
    result = _verify(*chain)
    assert result.ok and result.records == 6 and result.head_seq == 6
    assert json.loads(chain[1].read_text())["seq"] == 6


def test_edited_record_is_named(chain, tmp_path: Path) -> None:
    result = _verify(*_tampered(chain, tmp_path, ["UPDATE audit SET decision='allow' WHERE seq=4"]))
    assert not result.ok and result.first_bad_seq == 4 and "edited" in (result.reason or "")


def test_deleted_record_is_named(chain, tmp_path: Path) -> None:
    result = _verify(*_tampered(chain, tmp_path, ["DELETE FROM audit WHERE seq=4"]))
    assert not result.ok and result.first_bad_seq == 4


def test_reordered_records_are_named(chain, tmp_path: Path) -> None:
    swap = ["UPDATE audit SET seq=-2 WHERE seq=2", "UPDATE audit SET seq=2 WHERE seq=5",
            "UPDATE audit SET seq=5 WHERE seq=-2"]
    result = _verify(*_tampered(chain, tmp_path, swap))
    assert not result.ok and result.first_bad_seq == 2


def test_truncated_tail_is_found_through_the_anchor(chain, tmp_path: Path) -> None:
    result = _verify(*_tampered(chain, tmp_path, ["DELETE FROM audit WHERE seq>=5"]))
    assert not result.ok and result.first_bad_seq == 5 and "truncated" in (result.reason or "")


def test_rewritten_tail_does_not_match_the_anchor(chain, tmp_path: Path) -> None:
    # an attacker who deletes the last record and re-appends a consistent one is still caught
    db, anchor = _tampered(chain, tmp_path, ["DELETE FROM audit WHERE seq=6"])
    shutil.copy(anchor, tmp_path / "saved.anchor")
    store = open_store(f"sqlite:///{db}")
    AuditLog(store, tmp_path / "scratch.anchor").append(layer="policy", action="exec", target="innocent",
                                                        decision="allow")
    store.dispose()
    result = _verify(db, tmp_path / "saved.anchor")
    assert not result.ok and result.first_bad_seq == 6


def _append_many(db: str, anchor: str, n: int) -> None:
    store = open_store(f"sqlite:///{db}")
    log = AuditLog(store, Path(anchor))
    for i in range(n):
        log.append(layer="policy", action="exec", target=f"cmd {i}", decision="allow")
    store.dispose()


def test_threads_and_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    db, anchor = tmp_path / "c.db", tmp_path / "c.anchor"
    open_store(f"sqlite:///{db}").dispose()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(db), str(anchor), 15)) for _ in range(2)]
    threads = [threading.Thread(target=_append_many, args=(str(db), str(anchor), 15)) for _ in range(3)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
    result = _verify(db, anchor)
    assert result.ok, result.reason
    assert result.records == 75 and result.head_seq == 75


def test_cli_verify_exit_codes_and_export(loopmeter_home: Path, tmp_path: Path) -> None:
    _fill(loopmeter_home / "loopmeter.db", loopmeter_home / "audit.anchor", n=4)
    ok = subprocess.run(loopmeter_cmd("audit", "verify", "--json"), capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    out = tmp_path / "audit.jsonl"
    subprocess.run(loopmeter_cmd("audit", "export", "-o", str(out)), check=True, capture_output=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4] and lines[1]["prev"] == lines[0]["hash"]
    denied = subprocess.run(loopmeter_cmd("audit", "log", "--denied", "--json"), capture_output=True, text=True)
    assert [r["decision"] for r in json.loads(denied.stdout)] == ["deny", "deny"]
    conn = sqlite3.connect(loopmeter_home / "loopmeter.db")
    conn.execute("UPDATE audit SET target='other' WHERE seq=2")
    conn.commit()
    conn.close()
    bad = subprocess.run(loopmeter_cmd("audit", "verify"), capture_output=True, text=True)
    assert bad.returncode == 1 and "seq 2" in bad.stderr


def test_chain_on_postgresql_verifies_and_catches_an_edit(pg_store, tmp_path: Path) -> None:
    log = AuditLog(pg_store, tmp_path / "pg.anchor")
    threads = [threading.Thread(target=lambda: [log.append(layer="policy", action="exec", target="t",
                                                           decision="allow") for _ in range(5)]) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verify_chain(pg_store, tmp_path / "pg.anchor").ok
    from sqlalchemy import text

    with pg_store.engine.begin() as conn:
        conn.execute(text("UPDATE audit SET target='x' WHERE seq=7"))
    result = verify_chain(pg_store, tmp_path / "pg.anchor")
    assert not result.ok and result.first_bad_seq == 7


def test_cli_log_filters_by_run_and_since(loopmeter_home: Path) -> None:
    from datetime import timedelta

    from loopmeter.records import utcnow

    store = open_store(f"sqlite:///{loopmeter_home / 'loopmeter.db'}")
    log = AuditLog(store, loopmeter_home / "audit.anchor")
    log.append(layer="policy", action="exec", target="old", decision="allow", run_id="A",
               ts=utcnow() - timedelta(days=3))
    log.append(layer="policy", action="exec", target="new", decision="allow", run_id="B")
    store.dispose()
    recent = json.loads(subprocess.run(loopmeter_cmd("audit", "log", "--since", "1d", "--json"),
                                       capture_output=True, text=True).stdout)
    assert [r["target"] for r in recent] == ["new"]
    by_run = json.loads(subprocess.run(loopmeter_cmd("audit", "log", "--run", "A", "--json"),
                                       capture_output=True, text=True).stdout)
    assert [r["target"] for r in by_run] == ["old"]
    bad = subprocess.run(loopmeter_cmd("audit", "log", "--since", "yesterdayish"), capture_output=True, text=True)
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_anchor_copy_is_written_and_checked(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    log = AuditLog(store, tmp_path / "anchor", copy_path=tmp_path / "elsewhere" / "anchor.copy")
    for _ in range(3):
        log.append(layer="policy", action="exec", target="x", decision="allow")
    assert json.loads((tmp_path / "elsewhere" / "anchor.copy").read_text())["seq"] == 3
    (tmp_path / "anchor").unlink()  # the primary anchor is gone; the copy still catches a truncation
    with store.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("DELETE FROM audit WHERE seq = 3"))
    result = verify_chain(store, tmp_path / "anchor", tmp_path / "elsewhere" / "anchor.copy")
    store.dispose()
    assert not result.ok and result.first_bad_seq == 3 and "anchor copy" in (result.reason or "")
