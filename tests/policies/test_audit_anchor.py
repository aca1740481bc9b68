"""`audit verify` against a missing anchor, a missing anchor copy, and records forged past the anchored head.

The chains are written by the real path (`loopmeter sandbox exec` in a bubblewrap sandbox, or AuditLog),
then attacked as someone with write access to the store but not to the anchor would.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loopmeter.policies.audit import AuditLog, canonical_ts, read_anchor, record_hash, verify_chain
from loopmeter.store import open_store
from tests.conftest import loopmeter_cmd

DOCUMENTED_KEYS_ORDER = ["ok", "records", "head_seq", "head_hash", "first_bad_seq", "reason", "anchor", "problem"]
DOCUMENTED_KEYS = set(DOCUMENTED_KEYS_ORDER)


def _sandboxed_records(home: Path, n: int = 3, **env: str) -> None:
    """`n` commands through `loopmeter sandbox exec` (real bubblewrap): each writes its audit records."""
    for i in range(n):
        res = subprocess.run(loopmeter_cmd("sandbox", "exec", "--policy", "strict", "--workdir", str(home), "--",
                                           "true", str(i)), capture_output=True, text=True,
                             env={**os.environ, **env})
        assert res.returncode == 0, res.stderr


def _verify_cli(**env: str) -> tuple[int, dict, str]:
    js = subprocess.run(loopmeter_cmd("audit", "verify", "--json"), capture_output=True, text=True,
                        env={**os.environ, **env})
    text = subprocess.run(loopmeter_cmd("audit", "verify"), capture_output=True, text=True, env={**os.environ, **env})
    assert js.returncode == text.returncode
    return js.returncode, json.loads(js.stdout), text.stdout + text.stderr


def _forge(db: Path, n: int = 1, target: str = "nothing to see") -> None:
    """Append `n` records that chain correctly (prev and hash right), without touching any anchor."""
    conn = sqlite3.connect(db)
    seq, prev = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    for _ in range(n):
        seq += 1
        ts = datetime.now(UTC)
        rec = {"seq": seq, "ts": canonical_ts(ts), "sandbox_id": None, "run_id": None, "attempt_id": None,
               "actor": "agent:claude-code", "layer": "proxy", "action": "connect", "target": target,
               "decision": "allow", "rule_id": "network.allow[0]", "policy_sha256": None, "detail": None, "prev": prev}
        rec["hash"] = record_hash(rec)
        rec["ts"] = ts.strftime("%Y-%m-%d %H:%M:%S.%f")  # how the store keeps it
        conn.execute(f"INSERT INTO audit ({', '.join(rec)}) VALUES ({', '.join('?' * len(rec))})", list(rec.values()))
        prev = rec["hash"]
    conn.commit()
    conn.close()


def test_an_intact_log_verifies_and_json_keys_are_the_documented_ones(loopmeter_home: Path) -> None:
    code, data, text = _verify_cli()
    assert code == 0 and data["ok"] and data["records"] == 0  # nothing recorded, nothing anchored yet
    _sandboxed_records(loopmeter_home)
    code, data, text = _verify_cli()
    assert code == 0 and data["ok"] and "matches the anchor" in text, text
    assert set(data) == DOCUMENTED_KEYS
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    assert "{" + ", ".join(DOCUMENTED_KEYS_ORDER) + "}" in doc


def test_a_deleted_anchor_fails_verify(loopmeter_home: Path) -> None:
    _sandboxed_records(loopmeter_home)
    (loopmeter_home / "audit.anchor").unlink()
    code, data, text = _verify_cli()
    assert code == 1 and not data["ok"] and data["problem"] == "anchor-missing"
    assert data["first_bad_seq"] is None and data["records"] >= 3
    assert "NOT VERIFIED" in text and "audit.anchor is missing" in text


def test_an_emptied_or_garbled_anchor_fails_verify(loopmeter_home: Path) -> None:
    _sandboxed_records(loopmeter_home)
    for junk in ("", "{\"seq\": \"x\"}", "not json"):
        (loopmeter_home / "audit.anchor").write_text(junk)
        code, data, _ = _verify_cli()
        assert code == 1 and data["problem"] == "anchor-unreadable", junk


def test_a_missing_anchor_copy_fails_verify_and_names_the_copy(loopmeter_home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "offsite" / "audit.anchor.copy"
    env = {"LOOPMETER_AUDIT_ANCHOR_COPY": str(copy)}
    _sandboxed_records(loopmeter_home, **env)
    assert read_anchor(copy) == read_anchor(loopmeter_home / "audit.anchor")  # written by the real appends
    assert _verify_cli(**env)[0] == 0
    copy.unlink()
    code, data, text = _verify_cli(**env)
    assert code == 1 and data["problem"] == "copy-missing" and str(copy) in data["reason"]
    # the other way round: the copy is there, the primary is gone
    _sandboxed_records(loopmeter_home, n=1, **env)
    (loopmeter_home / "audit.anchor").unlink()
    code, data, _ = _verify_cli(**env)
    assert code == 1 and data["problem"] == "anchor-missing"


@pytest.mark.parametrize("forged", [1, 3])
def test_records_forged_past_the_anchored_head_fail_verify(loopmeter_home: Path, forged: int) -> None:
    _sandboxed_records(loopmeter_home)
    head = read_anchor(loopmeter_home / "audit.anchor")
    assert head is not None
    _forge(loopmeter_home / "loopmeter.db", forged)
    code, data, text = _verify_cli()
    assert code == 1 and data["problem"] == "past-head"
    assert data["first_bad_seq"] == head[0] + 1 and data["head_seq"] == head[0] + forged
    assert f"BROKEN at seq {head[0] + 1}" in text
    # one record is what a crash between an append and its anchor write can leave: the reason says so
    assert ("crash between an append and its anchor write (the one record" in data["reason"]) == (forged == 1)


@pytest.mark.parametrize("attack", ["forge past the head", "delete the tail", "rewrite the tail", "delete the anchor"])
def test_a_later_honest_append_does_not_bless_what_was_done_before_it(loopmeter_home: Path, attack: str) -> None:
    """The attacker tampers, then waits for loopmeter's next append (which moves the anchor to the new head).
    The append writes an evidence record first, so verify still fails, and names the tampering."""
    db = loopmeter_home / "loopmeter.db"
    _sandboxed_records(loopmeter_home, n=2)
    head = read_anchor(loopmeter_home / "audit.anchor")
    assert head is not None
    conn = sqlite3.connect(db)
    if attack == "delete the tail":
        conn.execute("DELETE FROM audit WHERE seq = ?", (head[0],))
    elif attack == "rewrite the tail":
        conn.execute("DELETE FROM audit WHERE seq = ?", (head[0],))
    conn.commit()
    conn.close()
    if attack == "forge past the head":
        _forge(db, 1)
    elif attack == "rewrite the tail":
        _forge(db, 1, target="a consistent but different last record")
    elif attack == "delete the anchor":
        (loopmeter_home / "audit.anchor").unlink()
    _sandboxed_records(loopmeter_home, n=1)  # the honest append that moves the anchor on
    code, data, text = _verify_cli()
    assert code == 1, text
    expected = {"forge past the head": ("past-head", head[0] + 1), "delete the tail": ("truncated", head[0]),
                "rewrite the tail": ("tail-rewritten", head[0]), "delete the anchor": ("anchor-missing", None)}
    assert (data["problem"], data["first_bad_seq"]) == expected[attack], data
    assert "evidence" in data["reason"]
    rows = json.loads(subprocess.run(loopmeter_cmd("audit", "log", "--denied", "--json"), capture_output=True,
                                     text=True).stdout)
    assert [r["rule_id"] for r in rows] == ["audit.anchor-mismatch"]  # and the reviewer sees it in the log


def test_a_person_accepts_a_crash_leftover_and_only_that(loopmeter_home: Path) -> None:
    db = loopmeter_home / "loopmeter.db"
    _sandboxed_records(loopmeter_home, n=1)
    _forge(db, 1, target="the record a crash left")
    assert _verify_cli()[1]["problem"] == "past-head"
    res = subprocess.run(loopmeter_cmd("audit", "accept", "--reason", "crash at 12:03, record checked"),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    code, data, text = _verify_cli()
    assert code == 0 and data["ok"] and "accepted by a person" in data["reason"], data
    rows = json.loads(subprocess.run(loopmeter_cmd("audit", "log", "--json"), capture_output=True, text=True).stdout)
    accept = [r for r in rows if r["rule_id"] == "audit.accept"]
    assert len(accept) == 1 and accept[0]["actor"] == "user" and "crash at 12:03" in accept[0]["detail"]
    assert rows[-2]["rule_id"] == "audit.anchor-mismatch"  # the evidence comes first, then the acceptance
    # it accepts what came before it, nothing after
    _forge(db, 1)
    assert _verify_cli()[1]["problem"] == "past-head"
    _sandboxed_records(loopmeter_home, n=1)
    assert _verify_cli()[1]["problem"] == "past-head"  # now as evidence, after the acceptance
    # a broken chain is never accepted
    conn = sqlite3.connect(db)
    conn.execute("UPDATE audit SET target = 'rewritten' WHERE seq = 2")
    conn.commit()
    conn.close()
    refused = subprocess.run(loopmeter_cmd("audit", "accept", "--reason", "please"), capture_output=True, text=True)
    assert refused.returncode == 1 and "chain itself is broken" in refused.stderr
    assert _verify_cli()[1]["problem"] == "edited"


def test_a_record_appended_by_a_writer_with_another_anchor_fails_verify(loopmeter_home: Path, tmp_path: Path) -> None:
    _sandboxed_records(loopmeter_home, n=1)
    store = open_store(f"sqlite:///{loopmeter_home / 'loopmeter.db'}")
    AuditLog(store, tmp_path / "elsewhere.anchor").append(layer="policy", action="exec", target="innocent",
                                                          decision="allow")
    store.dispose()
    code, data, _ = _verify_cli()
    assert code == 1 and data["problem"] == "past-head"


def test_forging_past_the_head_and_rewriting_the_copy_is_still_caught_by_the_primary(loopmeter_home: Path,
                                                                                     tmp_path: Path) -> None:
    copy = tmp_path / "copy.anchor"
    env = {"LOOPMETER_AUDIT_ANCHOR_COPY": str(copy)}
    _sandboxed_records(loopmeter_home, n=2, **env)
    _forge(loopmeter_home / "loopmeter.db", 1)
    conn = sqlite3.connect(loopmeter_home / "loopmeter.db")
    seq, digest = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    conn.close()
    copy.write_text(json.dumps({"seq": seq, "hash": digest}))  # the attacker reached the copy, not the primary
    code, data, _ = _verify_cli(**env)
    assert code == 1 and data["problem"] == "past-head" and "audit.anchor" in data["reason"]


def test_the_dashboard_check_catches_a_record_past_an_existing_anchor(loopmeter_home: Path) -> None:
    from loopmeter.analytics import chain_check

    _sandboxed_records(loopmeter_home, n=1)
    url = f"sqlite:///{loopmeter_home / 'loopmeter.db'}"
    assert chain_check.finish(chain_check.start(url))["status"] == "ok"
    _forge(loopmeter_home / "loopmeter.db", 1)
    status = chain_check.finish(chain_check.start(url))
    assert status["status"] == "broken" and "past the anchor" in status["detail"]


# -- the legitimate race: a crash between an append and its anchor write --------------------------------

def _append_forever(db: str, anchor: str, started: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    store = open_store(f"sqlite:///{db}")
    log = AuditLog(store, Path(anchor))
    started.set()
    while True:
        log.append(layer="policy", action="exec", target="loop", decision="allow")


def test_a_writer_killed_at_any_moment_leaves_at_most_one_record_past_the_head(tmp_path: Path) -> None:
    """SIGKILL a process appending as fast as it can, 15 times at arbitrary moments: the log and the anchor
    are either in step, or the log is exactly one record ahead (the window between a commit and the anchor's
    rename) and verify says so. Never a truncated tail, never two records past the head."""
    db, anchor = tmp_path / "a.db", tmp_path / "a.anchor"
    open_store(f"sqlite:///{db}").dispose()
    ctx = multiprocessing.get_context("spawn")
    outcomes = []
    for i in range(15):
        started = ctx.Event()
        proc = ctx.Process(target=_append_forever, args=(str(db), str(anchor), started))
        proc.start()
        assert started.wait(60)
        time.sleep(0.05 + 0.013 * i)  # arbitrary moments, not a tuned window
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        store = open_store(f"sqlite:///{db}")
        result = verify_chain(store, anchor)
        store.dispose()
        assert result.ok or (result.problem == "past-head" and result.first_bad_seq == result.head_seq), result
        outcomes.append(result.problem)
        if not result.ok:  # repair as a person would after reading the reason: re-anchor at the head
            anchor.write_text(json.dumps({"seq": result.head_seq, "hash": result.head_hash}))
    assert len(outcomes) == 15
