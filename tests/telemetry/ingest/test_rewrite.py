"""Ingest reads on from a file's cursor only where the file still holds what was read.

Claude Code transcripts are written here as an agent writes them, rewritten in place (same
inode) in the ways that fooled a cursor that only remembered the file's first KiB, and
read by the real ingest into real stores. The measure of exactness: after any sequence of
ingests, the store holds exactly what one ingest of every version of the file holds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from loopmeter.store import open_store
from loopmeter.telemetry.ingest import discover, ingest, load_cursors, plan, run
from loopmeter.telemetry.ingest.runner import TAIL_BYTES
from tests.fixtures.logs.corpus import generate
from tests.telemetry.ingest.test_incremental import rollup_and_rows

SONNET = "claude-sonnet-4-5-20250929"
SESSION = "22222222-aaaa-bbbb-cccc-000000000002"


def summary(size: int = 1500) -> str:
    """A first line longer than the KiB the old cursor fingerprinted."""
    return json.dumps({"type": "summary", "summary": "s" * size, "leafUuid": "x"}, separators=(",", ":")) + "\n"


def user(text: str) -> str:
    return json.dumps({"type": "user", "sessionId": SESSION, "timestamp": "2026-11-09T10:00:00.000Z",
                       "message": {"role": "user", "content": text}}, separators=(",", ":")) + "\n"


def call(req: str, ts: str, inp: int, out: int, *, after_usage: int = 200) -> str:
    """An assistant line as Claude Code writes it: usage inside `message`, then more fields
    (`after_usage` bytes of them) after it."""
    line = {"parentUuid": None, "isSidechain": False, "sessionId": SESSION, "cwd": "/home/dev/api",
            "type": "assistant", "timestamp": ts, "requestId": req,
            "message": {"id": f"msg_{req}", "type": "message", "role": "assistant", "model": SONNET,
                        "content": [{"type": "text", "text": "ok"}],
                        "usage": {"input_tokens": inp, "cache_creation_input_tokens": 100,
                                  "cache_read_input_tokens": 1000, "output_tokens": out}},
            "uuid": f"u-{req}", "toolUseResult": "r" * after_usage}
    return json.dumps(line, separators=(",", ":")) + "\n"


A = call("req_A", "2026-11-09T10:00:01.000Z", 10, 300)
B = call("req_B", "2026-11-09T10:05:01.000Z", 20, 400, after_usage=1500)
C = call("req_C", "2026-11-09T10:03:01.000Z", 30, 500)  # shorter than what follows B's usage
D = call("req_D", "2026-11-09T11:00:01.000Z", 40, 600)
E = call("req_E", "2026-11-09T12:00:01.000Z", 50, 700)


def rewrite_in_place(path: Path, text: str) -> None:
    """Overwrite the file's bytes, keeping its inode (as an editor or `>` does)."""
    before = path.stat()
    with path.open("r+b") as fh:
        fh.write(text.encode())
        fh.truncate()
    after = path.stat()
    assert after.st_ino == before.st_ino
    if after.st_mtime_ns == before.st_mtime_ns:  # file times tick in jiffies: make the edit visible
        os.utime(path, ns=(after.st_atime_ns, before.st_mtime_ns + 10_000_000))


def contents(db: Path) -> dict[str, Any]:
    """What a store holds: its keys, the sums of every token kind and of cost, and its calls."""
    conn = sqlite3.connect(db)
    try:
        keys = sorted(r[0] for r in conn.execute("SELECT key FROM usage"))
        sums = conn.execute(
            "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
            "sum(cache_write_tokens), round(sum(cost_usd), 12) FROM usage").fetchone()
    finally:
        conn.close()
    return {"keys": keys, "sums": sums}


def fresh_ingest(tmp_path: Path, *texts: str) -> dict[str, Any]:
    """What one ingest of each given file version, into a new store, holds."""
    base = tmp_path / "fresh" / uuid.uuid4().hex
    db = base / "store.db"
    fresh = open_store(f"sqlite:///{db}")
    try:
        for i, text in enumerate(texts):
            f = base / f"logs-{i}" / "projects" / "p" / f"{SESSION}.jsonl"
            f.parent.mkdir(parents=True)
            f.write_text(text)
            ingest(fresh, paths=[f], workers=1)
    finally:
        fresh.dispose()
    return contents(db)


@pytest.fixture
def transcript(tmp_path: Path) -> Path:
    path = tmp_path / "logs" / "projects" / "-home-dev-api" / f"{SESSION}.jsonl"
    path.parent.mkdir(parents=True)
    return path


def _db(sqlite_url: str) -> Path:
    return Path(sqlite_url.removeprefix("sqlite:///"))


def test_rewrite_that_keeps_the_head_and_grows_past_the_offset_is_read_again(tmp_path, transcript, store,
                                                                            sqlite_url):
    # C is written in before U and B: the old offset now falls in the middle of B's line,
    # past its usage. Read on from there, the rest of B carries no usage marker (so nothing
    # is malformed) and C, wholly before the offset, was never read.
    first = summary() + A + user("look at login.py") + B
    transcript.write_text(first)
    ingest(store, paths=[transcript], workers=1)
    offset = load_cursors(sqlite_url, store)[str(transcript)].offset
    assert offset == len(first)

    final = summary() + A + C + user("look at login.py") + B
    rewrite_in_place(transcript, final)
    assert final[:1024] == first[:1024] and len(final) > offset
    assert "usage" not in final[offset:]  # what reading on from the old offset would see

    report = ingest(store, paths=[transcript], workers=1)
    assert report.rows_added == 1  # C, once; A and B are stored already
    assert report.malformed == {}
    assert report.bytes_read == len(final)  # read again from the start
    assert contents(_db(sqlite_url)) == fresh_ingest(tmp_path, final)
    kept, rows = rollup_and_rows(_db(sqlite_url))
    assert kept == rows  # the hourly rollup counts C once too

    cur = load_cursors(sqlite_url, store)[str(transcript)]
    assert cur.offset == len(final)
    assert ingest(store, paths=[transcript], workers=1).files_read == 0


def test_rewrite_that_shrinks_is_read_again_and_earlier_calls_stay(tmp_path, transcript, store, sqlite_url):
    first = summary() + A + user("x") + B
    transcript.write_text(first)
    ingest(store, paths=[transcript], workers=1)
    final = summary() + D
    rewrite_in_place(transcript, final)
    assert len(final) < len(first)

    report = ingest(store, paths=[transcript], workers=1)
    assert report.bytes_read == len(final) and report.rows_added == 1
    # rows of calls no longer in the file stay (history outlives the agents' clean-up)
    assert contents(_db(sqlite_url)) == fresh_ingest(tmp_path, first, final)


def test_rewrite_below_the_saved_size_but_past_the_offset_is_read_again(tmp_path, transcript, store,
                                                                       sqlite_url):
    # The last line was still being written: the cursor's offset stops before it, its size
    # does not. The file is then rewritten shorter than that size, longer than the offset,
    # with C before A: from the old offset, C would be skipped.
    partial = B[: len(B) - 10]  # no newline, not JSON yet
    first = summary() + A + partial
    transcript.write_text(first)
    ingest(store, paths=[transcript], workers=1)
    cur = load_cursors(sqlite_url, store)[str(transcript)]
    assert cur.offset == len(summary() + A) and cur.size == len(first)

    final = summary() + C + A
    rewrite_in_place(transcript, final)
    assert cur.offset < len(final) < cur.size

    report = ingest(store, paths=[transcript], workers=1)
    assert report.bytes_read == len(final) and report.rows_added == 1
    assert contents(_db(sqlite_url)) == fresh_ingest(tmp_path, final)


def test_rewrite_of_the_same_size_is_read_again(tmp_path, transcript, store, sqlite_url):
    # The same bytes count, another request id in an already-read line: only the bytes
    # before the offset tell it from an untouched file.
    first = summary() + A + user("x") + B
    transcript.write_text(first)
    ingest(store, paths=[transcript], workers=1)
    final = first.replace("req_B", "req_Z")
    assert len(final) == len(first)
    rewrite_in_place(transcript, final)

    report = ingest(store, paths=[transcript], workers=1)
    assert report.rows_added == 1
    assert contents(_db(sqlite_url)) == fresh_ingest(tmp_path, first, final)


def test_an_append_reads_only_the_new_bytes(tmp_path, transcript, store, sqlite_url):
    first = summary() + A + user("x") + B
    transcript.write_text(first)
    ingest(store, paths=[transcript], workers=1)
    with transcript.open("a") as fh:
        fh.write(user("and the tests") + D)

    [work] = plan(discover(paths=[transcript]), load_cursors(sqlite_url, store))
    assert (work.start, work.reset) == (len(first), False)
    report = run(store, sqlite_url, [work], workers=1)
    assert report.bytes_read == len(user("and the tests") + D)
    assert report.rows_added == 1
    assert load_cursors(sqlite_url, store)[str(transcript)].offset == transcript.stat().st_size

    # a second append, with the bytes before the offset now those of the first append
    with transcript.open("a") as fh:
        fh.write(E)
    report = ingest(store, paths=[transcript], workers=1)
    assert report.bytes_read == len(E) and report.rows_added == 1
    assert contents(_db(sqlite_url)) == fresh_ingest(tmp_path, first + user("and the tests") + D + E)


def test_a_cursor_without_the_fingerprint_before_its_offset_reads_again_once(tmp_path, transcript, store,
                                                                            sqlite_url):
    # Cursors saved by the previous version fingerprinted only the first KiB: such a file,
    # once it changes, is read again whole (keys keep totals exact), then incrementally.
    first = summary() + A + user("x") + B
    transcript.write_text(first)
    ingest(store, paths=[transcript], workers=1)
    conn = sqlite3.connect(_db(sqlite_url))
    conn.execute("UPDATE ingest_cursor SET state = json_remove(state, '$.tail')")
    conn.commit()
    conn.close()
    assert "tail" not in load_cursors(sqlite_url, store)[str(transcript)].state
    with transcript.open("a") as fh:
        fh.write(D)

    report = ingest(store, paths=[transcript], workers=1)
    assert report.bytes_read == len(first + D) and report.rows_added == 1
    with transcript.open("a") as fh:
        fh.write(E)
    report = ingest(store, paths=[transcript], workers=1)
    assert report.bytes_read == len(E) and report.rows_added == 1
    assert contents(_db(sqlite_url)) == fresh_ingest(tmp_path, first + D + E)


def test_a_big_transcript_rewritten_in_place_is_read_again_in_ranges_exactly(tmp_path, store, sqlite_url):
    # One file read in byte ranges on two processes, then rewritten with a new call in the
    # middle (its first MB unchanged) and grown: every range is read again, nothing twice.
    generate(tmp_path / "corpus", mb=3, claude_share=1.0, file_mb=3)
    [(_, path)] = discover(paths=[tmp_path / "corpus"])
    first = path.read_bytes()
    run(store, sqlite_url, plan(discover(paths=[path]), load_cursors(sqlite_url, store)), workers=2,
        split_bytes=256 << 10, pool_min_bytes=0)
    middle = first.index(b"\n", len(first) // 2) + 1
    final = first[:middle] + C.encode() + first[middle:] + D.encode()
    rewrite_in_place(path, final.decode())

    work = plan(discover(paths=[path]), load_cursors(sqlite_url, store))
    assert [w.reset for w in work] == [True]
    report = run(store, sqlite_url, work, workers=2, split_bytes=256 << 10, pool_min_bytes=0)
    assert report.rows_added == 2 and report.bytes_read == len(final)
    assert contents(_db(sqlite_url)) == fresh_ingest(tmp_path, final.decode())
    kept, rows = rollup_and_rows(_db(sqlite_url))
    assert kept == rows
    assert plan(discover(paths=[path]), load_cursors(sqlite_url, store)) == []


def test_the_fingerprint_covers_the_bytes_just_before_the_offset(tmp_path, transcript, store, sqlite_url):
    # A change TAIL_BYTES before the offset or nearer is seen; one further back (past the
    # first KiB) is not: that is the bound of what a cursor remembers.
    pad = user("p" * (3 * TAIL_BYTES))
    first = summary() + pad + A
    transcript.write_text(first)
    ingest(store, paths=[transcript], workers=1)
    offset = len(first)

    near = offset - TAIL_BYTES  # the first byte the fingerprint covers
    assert first[near] == "p"
    rewrite_in_place(transcript, first[:near] + "q" + first[near + 1:] + D)
    assert [w.reset for w in plan(discover(paths=[transcript]), load_cursors(sqlite_url, store))] == [True]

    far = near - 1
    assert far > 1024 and first[far] == "p"
    rewrite_in_place(transcript, first[:far] + "q" + first[far + 1:] + D)
    assert [w.reset for w in plan(discover(paths=[transcript]), load_cursors(sqlite_url, store))] == [False]


def test_postgresql_store_reads_a_rewritten_file_again_exactly(tmp_path, transcript, pg_store):
    first = summary() + A + user("look at login.py") + B
    transcript.write_text(first)
    ingest(pg_store, paths=[transcript], workers=1)
    final = summary() + A + C + user("look at login.py") + B
    rewrite_in_place(transcript, final)

    report = ingest(pg_store, paths=[transcript], workers=1)
    assert report.rows_added == 1 and report.bytes_read == len(final)
    from sqlalchemy import text

    with pg_store.engine.connect() as conn:
        keys = sorted(r[0] for r in conn.execute(text("SELECT key FROM usage")))
        calls, tokens_in = conn.execute(text("SELECT count(*), sum(input_tokens) FROM usage")).one()
    want = fresh_ingest(tmp_path, final)
    assert keys == want["keys"]
    assert (calls, tokens_in) == want["sums"][:2]
