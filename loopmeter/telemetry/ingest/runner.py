"""Incremental ingest: find the agents' log files, read only their new bytes, store usage rows.

Each file has a cursor (path, inode, size, offset, mtime, state) in `ingest_cursor`.
`plan()` only stats files and compares them with the cursors (read without SQLAlchemy:
through the stdlib's sqlite3, or psycopg for PostgreSQL), so a call with nothing new
costs milliseconds. A changed file is read on from its offset only when the bytes it
was read up to are still there (fingerprints of its first bytes and of the bytes just
before the offset, kept in the cursor's state); otherwise it is read again from the
start. `run()` reads what is new on up to two processes: small files are packed into
tasks, and a big Claude Code transcript (whose lines are independent) is split into byte
ranges. Rows go to the store in batches, each followed by the cursors of the files whose rows
it completes (and a mid-file cursor for a big file); keys deduplicate, so a batch
written again after a kill adds nothing.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from loopmeter.errors import LoopmeterError
from loopmeter.outcomes.identity import Checkout, find_checkout, repo_identity, safe_url
from loopmeter.records import UsageParams
from loopmeter.telemetry.ingest import claude_code, codex, gemini
from loopmeter.telemetry.ingest.base import FileContext, ReadStats, SessionSeen, Source, read_candidates

if TYPE_CHECKING:
    from loopmeter.store import Store
    from loopmeter.store.pg_read import PgReader

SOURCES: dict[str, Source] = {s.name: s for s in (claude_code.SOURCE, codex.SOURCE, gemini.SOURCE)}
BATCH_ROWS = 10000
SPLIT_BYTES = 96 << 20  # Claude Code files above this are read in ranges of about this size
POOL_MIN_BYTES = 16 << 20  # below this, processes cost more than they save
# Fingerprints kept in a cursor's state: of a file's first bytes, and of the bytes just before
# its offset. A file whose bytes there changed was rewritten, not appended to: it is read
# again from the start (keys keep what was stored already from being counted twice).
HEAD_BYTES = 1024
TAIL_BYTES = 4096
# In a cursor's state: the file was read by a version that stores sessions (one saved before
# has its file read again once, so that its sessions get their rows).
SESSIONS_READ = "sessions"
PAGE_CACHE_KIB = 32 << 10  # SQLite page cache of the connections that write ingested rows

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass
class Cursor:
    path: str
    source: str
    inode: int | None
    size: int
    offset: int
    mtime: float | None
    malformed_lines: int = 0
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileWork:
    """New bytes to read in one file."""

    path: Path
    source: str  # Source.name
    start: int
    size: int
    inode: int
    mtime: float
    state: dict[str, Any]
    malformed_before: int
    reset: bool  # read again from the start (new, shrunk or replaced)


@dataclass
class Part:
    """One file, or one byte range of a big one."""

    work: FileWork
    start: int
    end: int
    final: bool  # the range ends at the file's end
    owns_cursor: bool  # the part saves the file's cursor (a whole file, not one range of it)


@dataclass
class Task:
    """Parts read by one process, their rows written in shared batches (few, large commits)."""

    db_url: str
    parts: list[Part]
    index: int = 0
    batch_rows: int = BATCH_ROWS  # rows per write (a smaller number in tests)

    @property
    def size(self) -> int:
        return sum(p.end - p.start for p in self.parts)


@dataclass
class PartResult:
    path: str
    start: int
    end: int
    malformed: int
    error: str | None = None


@dataclass
class TaskResult:
    rows_added: int
    parts: list[PartResult]


@dataclass
class IngestReport:
    files_seen: int = 0
    files_read: int = 0
    bytes_read: int = 0
    rows_added: int = 0
    seconds: float = 0.0
    malformed: dict[str, int] = field(default_factory=dict)  # path -> lines skipped in this run
    errors: dict[str, str] = field(default_factory=dict)  # path -> why it could not be read

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_seen": self.files_seen,
            "files_read": self.files_read,
            "bytes_read": self.bytes_read,
            "rows_added": self.rows_added,
            "seconds": round(self.seconds, 3),
            "malformed": [{"path": p, "lines": n} for p, n in sorted(self.malformed.items())],
            "errors": [{"path": p, "error": e} for p, e in sorted(self.errors.items())],
        }


# -- finding files -------------------------------------------------------------


def classify(path: Path) -> Source | None:
    """Which agent wrote this file (for `--path`): by name, then by its first bytes."""
    name = path.name
    if name.startswith("session-") and (name.endswith(".json") or name.endswith(".jsonl")):
        return gemini.SOURCE
    if not name.endswith(".jsonl"):
        return None
    if name.startswith("rollout-"):
        return codex.SOURCE
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    if b'"session_meta"' in head or b'"turn_context"' in head:
        return codex.SOURCE
    return claude_code.SOURCE


def discover(
    sources: Iterable[str] | None = None, paths: Iterable[Path] | None = None, env: dict[str, str] | None = None
) -> list[tuple[Source, Path]]:
    """Log files to consider: the given paths (files or folders), else each source's default places."""
    wanted = set(sources) if sources is not None else set(SOURCES)
    unknown = wanted - set(SOURCES)
    if unknown:
        raise LoopmeterError(f"unknown log source {sorted(unknown)[0]!r}", hint=f"one of {', '.join(SOURCES)}")
    found: dict[Path, Source] = {}
    if paths:
        for given in paths:
            p = Path(given).expanduser()
            if not p.exists():
                raise LoopmeterError(f"{p}: no such file or folder", hint="pass a log file or a folder of logs")
            candidates = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
            for f in candidates:
                src = classify(f)
                if src is not None and src.name in wanted:
                    found[f.absolute()] = src
    else:
        env = dict(os.environ) if env is None else env
        for name in sorted(wanted):
            src = SOURCES[name]
            for root in src.roots(env):
                for f in src.files(root):
                    found.setdefault(f.absolute(), src)
    return sorted(((s, p) for p, s in found.items()), key=lambda sp: str(sp[1]))


# -- cursors and planning -------------------------------------------------------


# "offset" quoted: a reserved word in PostgreSQL
_CURSOR_SQL = 'SELECT path, source, inode, size, "offset", mtime, malformed_lines, state FROM ingest_cursor'


def _cursors_of(rows: Iterable[Sequence[Any]]) -> dict[str, Cursor]:
    return {r[0]: Cursor(r[0], r[1], r[2], r[3] or 0, r[4] or 0, r[5], r[6] or 0, json.loads(r[7] or "{}"))
            for r in rows}


def _sqlite_cursors(db_path: Path) -> dict[str, Cursor] | None:
    """Cursors read with the stdlib driver; None when the database is missing or not migrated."""
    if not db_path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(_CURSOR_SQL).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return _cursors_of(rows)


def load_cursors(db_url: str, store: Store | PgReader | None = None) -> dict[str, Cursor] | None:
    """The stored cursors by path, read through `store` (a Store, or a PgReader on a current
    PostgreSQL store), else from the SQLite file of `db_url`; None when there is nothing to
    read them from."""
    if store is None and db_url.startswith("sqlite:///"):
        return _sqlite_cursors(Path(db_url.removeprefix("sqlite:///")))
    if store is None:
        return None
    from loopmeter.store.pg_read import PgReader

    if isinstance(store, PgReader):
        return _cursors_of(store.rows(_CURSOR_SQL))
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return _cursors_of(conn.execute(text(_CURSOR_SQL)))


def fingerprints(path: Path, offset: int) -> dict[str, str]:
    """sha1 of the file's first HEAD_BYTES and of the TAIL_BYTES before `offset` (both
    within its first `offset` bytes): what a cursor at `offset` keeps in its state."""
    tail_start = max(offset - TAIL_BYTES, 0)
    with path.open("rb") as fh:
        fd = fh.fileno()
        head = os.pread(fd, min(offset, HEAD_BYTES), 0)
        tail = head[tail_start:offset] if offset <= HEAD_BYTES else os.pread(fd, offset - tail_start, tail_start)
    return {"head": hashlib.sha1(head).hexdigest(), "tail": hashlib.sha1(tail).hexdigest()}


def _unchanged_before(path: Path, cur: Cursor) -> bool:
    """Whether the file still holds what its cursor was saved after: the same first bytes and
    the same bytes just before the offset. A cursor without both fingerprints (saved by a
    version that kept only the first bytes') cannot tell: the file is read again."""
    if cur.offset <= 0:
        return True  # nothing was read: reading on is reading from the start
    saved = (cur.state.get("head"), cur.state.get("tail"))
    if None in saved:
        return False
    now = fingerprints(path, cur.offset)
    return (now["head"], now["tail"]) == saved


def plan(files: list[tuple[Source, Path]], cursors: dict[str, Cursor] | None) -> list[FileWork]:
    """What to read: new files whole, grown files from their offset; files that shrank, were
    replaced (another inode) or rewritten (other bytes before the offset) again from the start."""
    cursors = cursors or {}
    work = []
    for src, path in files:
        try:
            st = path.stat()
        except OSError:
            continue  # gone since it was listed: its rows stay
        cur = cursors.get(str(path))
        if cur is not None and not cur.state.get(SESSIONS_READ):
            cur = None  # read before sessions were stored: read again whole, once (keys keep totals exact)
        if cur is not None and cur.inode == st.st_ino and cur.size == st.st_size and cur.mtime == st.st_mtime:
            continue
        # a cursor's size is at most the file's size when it was saved (the offset, for one
        # saved inside a file): logs only grow, so a smaller file was rewritten
        reset = (cur is None or cur.inode != st.st_ino or st.st_size < cur.size or st.st_size < cur.offset
                 or src.is_whole_file(path))
        if not reset and cur is not None:
            try:
                reset = not _unchanged_before(path, cur)
            except OSError:
                continue
        if reset:
            work.append(FileWork(path, src.name, 0, st.st_size, st.st_ino, st.st_mtime, {}, 0, True))
        else:
            assert cur is not None
            work.append(FileWork(path, src.name, cur.offset, st.st_size, st.st_ino, st.st_mtime,
                                 cur.state, cur.malformed_lines, False))
    return work


# -- reading (in worker processes or inline) -----------------------------------

class _Aborted(Exception):
    """The parent stopped writing: this task's rows have nowhere to go."""


def _is_sqlite_file(db_url: str) -> bool:
    return db_url.startswith("sqlite:///") and ":memory:" not in db_url


def _is_postgres(db_url: str) -> bool:
    from loopmeter.store.pg_read import is_postgres

    return is_postgres(db_url)


@dataclass
class IngestState:
    """What reading tasks and writing their rows needs besides the tasks, passed to every
    call that does it: the parent makes one for itself, and one that its worker processes
    share (each gets it as its Process argument, copied at fork)."""

    sinks: dict[str, Any] = field(default_factory=dict)  # this process's writer per database URL
    # In a worker: where it sends each task's end and result, and, for a SQLite store, its
    # batches: the parent is the one writer. SQLite has one writer at a time anyway, and each
    # commit by another connection empties a connection's page cache, so two writers took
    # 1.9 s for what one does in 1.1 s.
    out_queue: Any = None
    abort: Any = None  # set by the parent when it stops writing (an error, Ctrl-C): workers stop too
    # In a worker that writes for itself (PostgreSQL): set by the parent once the store exists.
    # The parent creates a new store while the workers read their first batches.
    store_ready: Any = None
    checkouts: dict[str, Checkout | None] = field(default_factory=dict)  # by session cwd, found once

    def sink(self, db_url: str, store: Store | None) -> Any:
        """The writer for db_url: SQLite files and PostgreSQL get a connection of their own
        (rows, rollup, sessions and cursors in one transaction, no SQLAlchemy); anything else
        goes through the Store handed in, else one opened here."""
        if store is not None and not _is_sqlite_file(db_url) and not _is_postgres(db_url):
            return _StoreSink(store)
        sink = self.sinks.get(db_url)
        if sink is None:
            self._wait_for_store()
            if _is_sqlite_file(db_url):
                from loopmeter.store.sqlite_writer import BUSY_TIMEOUT_MS, SqliteUsageWriter

                sink = SqliteUsageWriter(db_url.removeprefix("sqlite:///"), busy_timeout_ms=BUSY_TIMEOUT_MS,
                                         cache_kib=PAGE_CACHE_KIB)
            elif _is_postgres(db_url):
                from loopmeter.store.pg_writer import PgUsageWriter

                sink = PgUsageWriter(db_url)
            else:
                from loopmeter.store import open_store

                sink = _StoreSink(open_store(db_url, migrate=False), owned=True)
            self.sinks[db_url] = sink
        return sink

    def _wait_for_store(self) -> None:
        while self.store_ready is not None and not self.store_ready.wait(0.1):
            if self.abort.is_set():
                raise _Aborted

    def close(self) -> None:
        """Close the writers this process opened (a store handed in stays open)."""
        while self.sinks:
            self.sinks.popitem()[1].close()


_PACK = msgspec.msgpack.Encoder().encode
_UNPACK = msgspec.msgpack.Decoder(list[tuple[tuple, list[tuple]]]).decode  # type: ignore[type-arg]


class _QueueSink:
    """In a worker: hands each batch, already as SQLite parameters, to the parent."""

    def __init__(self, state: IngestState, task: int):
        self.state, self.task = state, task

    def write(self, params: list[UsageParams], cursors: list[dict[str, Any]],
              sessions: list[tuple[Any, ...]]) -> int:
        from loopmeter.store.sqlite_writer import prepare

        if self.state.abort.is_set():
            raise _Aborted()
        groups, hours = prepare(params)
        # rows as MessagePack: 6x cheaper to make than the queue's pickle, as cheap to read
        self.state.out_queue.put(("batch", self.task, _PACK(groups), hours, cursors, sessions))
        return 0  # the parent counts what is new


class _StoreSink:
    """Writes through the Store (one handed in by the caller, neither a SQLite file nor PostgreSQL)."""

    def __init__(self, store: Store, *, owned: bool = False):
        self.store, self.owned = store, owned

    def write(self, params: list[UsageParams], cursors: list[dict[str, Any]],
              sessions: list[tuple[Any, ...]]) -> int:
        from loopmeter.store import IngestCursor

        added = self.store.add_usage_params(params)
        self.store.add_sessions(sessions)
        if cursors:
            self.store.save(*(IngestCursor(**{**c, "state": json.dumps(c["state"])}) for c in cursors))
        return added

    def close(self) -> None:
        if self.owned:
            self.store.dispose()


def _cursor(w: FileWork, offset: int, malformed: int, state: dict[str, Any], *, mid: bool = False) -> dict[str, Any]:
    state = {**state, SESSIONS_READ: 1}
    if offset > 0:
        state.update(fingerprints(w.path, offset))
    return {
        "path": str(w.path), "source": SOURCES[w.source].tag, "inode": w.inode,
        # a checkpoint inside a file records the size read so far, so that `plan` after a
        # crash sees the file as grown and reads on from `offset` instead of skipping it
        "size": offset if mid else w.size, "offset": offset, "mtime": w.mtime, "malformed_lines": malformed,
        "state": state, "updated_at": datetime.now(UTC),
    }


def _lines(part: Part, src: Source, fh: Any, stats: ReadStats) -> Iterator[bytes | memoryview]:
    if src.is_whole_file(part.work.path):
        data = fh.read(part.end)
        stats.end = len(data)
        return iter([data])
    return read_candidates(fh, part.start, part.end, src.markers, stats, final=part.final)


class _Writer:
    """Rows, their sessions and cursors of a task, written together in batches."""

    def __init__(self, open_sink: Callable[[], Any], state: IngestState):
        self.open_sink, self.state = open_sink, state  # opened at the first write
        self.rows: list[UsageParams] = []
        self.cursors: list[dict[str, Any]] = []  # cursors of parts whose rows are all in self.rows or stored
        self.sessions: dict[str, dict[str, SessionSeen]] = {}  # by source: the parsers' FileContext.sessions
        self.added = 0

    def flush(self, *extra_cursors: dict[str, Any]) -> None:
        cursors = [*self.cursors, *extra_cursors]
        if self.rows or cursors:
            sessions = _session_rows(self.sessions, self.state.checkouts)
            self.added += self.open_sink().write(self.rows, cursors, sessions)
        self.rows, self.cursors = [], []


def _session_rows(seen: dict[str, dict[str, SessionSeen]],
                  checkouts: dict[str, Checkout | None]) -> list[tuple[Any, ...]]:
    """The sessions seen since the last batch as session rows (store.sessions.SESSION_FIELDS),
    placed in a repository: the URL the log names, else the checkout holding the session's cwd
    (its origin URL, else its top level; found from its files once per cwd); emptied."""
    rows = []
    for by_id in seen.values():
        for s in by_id.values():
            checkout = None
            if s.cwd:
                if s.cwd not in checkouts:
                    checkouts[s.cwd] = find_checkout(s.cwd)
                checkout = checkouts[s.cwd]
            url = (safe_url(s.url) if s.url else None) or (checkout.origin if checkout else None)
            repo = repo_identity(url) if url else (repo_identity(checkout.top) if checkout else None)
            rows.append((s.source, s.session_id, s.agent, s.user, s.cwd, s.branch, s.commit, repo, url,
                         s.first_ts, s.last_ts))
        by_id.clear()
    return rows


def _owner(path: Path) -> str | None:
    import pwd

    try:
        uid = path.stat().st_uid
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
    except OSError:
        return None


def _read_part(part: Part, writer: _Writer, price_table: Any, batch_rows: int = BATCH_ROWS) -> PartResult:
    w = part.work
    src = SOURCES[w.source]
    # the user usage is attributed to: whose agent logs these are
    ctx = FileContext(path=w.path, source=src.tag, agent=src.agent, provider=src.provider, state=dict(w.state),
                      price_table=price_table, user=_owner(w.path), sessions=writer.sessions.setdefault(src.tag, {}))
    stats = ReadStats(end=part.start)

    def bad() -> int:
        return ctx.malformed + stats.oversized_candidates

    try:
        rows = writer.rows
        with w.path.open("rb") as fh:
            for row in src.parse(_lines(part, src, fh, stats), ctx):
                rows.append(row)
                if len(writer.rows) >= batch_rows:
                    # A checkpoint inside a big file: its cursor moves with the stored rows.
                    mid = ([_cursor(w, stats.end, w.malformed_before + bad(), ctx.state, mid=True)]
                           if part.owns_cursor else [])
                    writer.flush(*mid)
                    rows = writer.rows
    except OSError as exc:
        return PartResult(str(w.path), part.start, part.start, 0, error=exc.strerror or str(exc))
    if part.owns_cursor:
        writer.cursors.append(_cursor(w, stats.end, w.malformed_before + bad(), ctx.state))
    return PartResult(str(w.path), part.start, stats.end, bad())


def run_task(t: Task, state: IngestState, store: Store | None = None) -> TaskResult:
    """Read a task's parts; write their rows, and the cursors of the whole files among them
    (in a worker for a SQLite store: send them to the parent, which writes them)."""
    from loopmeter.telemetry.pricing import default_price_table

    if state.out_queue is not None and _is_sqlite_file(t.db_url):
        queued = _QueueSink(state, t.index)
        writer = _Writer(lambda: queued, state)
    else:
        # PostgreSQL takes the workers' batches side by side (pg_writer orders its locks)
        writer = _Writer(lambda: state.sink(t.db_url, store), state)
    table = default_price_table()
    results = [_read_part(part, writer, table, t.batch_rows) for part in t.parts]
    writer.flush()
    return TaskResult(writer.added, results)


def _worker(tasks: list[Task], next_task: Any, state: IngestState) -> None:
    """A worker process: run the next task nobody has taken (they come biggest first) until
    none is left, sending each one's end and result, or its error, to the parent."""
    # The parent's single SQLite writer goes first when both cores are busy: it then keeps
    # the queue short and little is left to write when the readers end (measured: cold
    # `usage` on 1 GB 0.03-0.04 s faster, in 14-17 of 21 paired runs).
    os.nice(5)
    i = -1  # the task being run
    try:
        while not state.abort.is_set():
            with next_task.get_lock():
                i = next_task.value
                next_task.value = i + 1
            if i >= len(tasks):
                return
            state.out_queue.put(("end", i, run_task(tasks[i], state)))
    except _Aborted:
        pass
    except BaseException as exc:  # Ctrl-C included: the parent decides
        state.out_queue.put(("failed", i, _sendable(exc)))
        return
    finally:
        state.close()
    # The parent stopped reading: exit without waiting for unsent batches to be read.
    state.out_queue.cancel_join_thread()


def _sendable(exc: BaseException) -> BaseException:
    """The worker's error itself when it survives pickling, else its type and message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return LoopmeterError(f"ingest worker: {type(exc).__name__}: {exc}")


def _collect(state: IngestState, sink: Any, tasks: list[Task], procs: list[Any], progress: Progress | None,
             total: int) -> tuple[list[TaskResult], int]:
    """The parent's side: write the workers' batches as they come (SQLite) and take each task's
    result until every task has ended; returns the results and the rows the batches added."""
    import queue

    results: dict[int, TaskResult] = {}
    added = done = 0
    while len(results) < len(tasks):
        try:
            item = state.out_queue.get(timeout=0.2)
        except queue.Empty:
            # a worker that died (killed) sends nothing; one that ended sent all it had
            if any(p.exitcode not in (None, 0) for p in procs) or not any(p.is_alive() for p in procs):
                codes = ", ".join(str(p.exitcode) for p in procs)
                raise LoopmeterError(f"an ingest worker stopped before its work was done (exit codes {codes})",
                                     hint="run the same command again: nothing is counted twice") from None
            continue
        if item[0] == "batch":
            added += sink.write_groups(_UNPACK(item[2]), item[3], item[4], item[5])  # groups, hours, cursors, sessions
        elif item[0] == "failed":
            raise item[2]
        else:
            results[item[1]] = item[2]
            done += tasks[item[1]].size
            if progress:
                progress(done, total)
    return [results[i] for i in sorted(results)], added


def _stop_workers(state: IngestState, procs: list[Any]) -> None:
    """After the parent stopped writing (an error, Ctrl-C): tell the workers to stop and drain
    the queue until they have, so that none is left blocked on a full queue."""
    import queue

    state.abort.set()
    while any(p.is_alive() for p in procs):
        try:
            state.out_queue.get(timeout=0.05)
        except queue.Empty:
            pass
    for p in procs:
        p.join()


def _boundary(path: Path, near: int) -> int:
    """The offset just past the first newline at or after `near`."""
    with path.open("rb") as fh:
        fh.seek(near)
        pos = near
        while True:
            data = fh.read(1 << 20)
            if not data:
                return pos
            i = data.find(b"\n")
            if i >= 0:
                return pos + i + 1
            pos += len(data)


def tasks_for(db_url: str, work: list[FileWork], split_bytes: int = SPLIT_BYTES,
              batch_rows: int = BATCH_ROWS) -> list[Task]:
    """Big Claude Code files become ranges of about split_bytes; small files are packed into
    tasks of about that size, so each process commits a few large batches."""
    parts: list[Part] = []
    for w in work:
        src = SOURCES[w.source]
        length = w.size - w.start
        if src.splittable and length > 2 * split_bytes:
            bounds = [w.start]
            for i in range(1, length // split_bytes):
                b = _boundary(w.path, w.start + i * split_bytes)
                if bounds[-1] < b < w.size:
                    bounds.append(b)
            bounds.append(w.size)
            for a, b in zip(bounds, bounds[1:], strict=False):
                parts.append(Part(w, a, b, final=b == w.size, owns_cursor=False))
        else:
            parts.append(Part(w, w.start, w.size, final=True, owns_cursor=True))
    parts.sort(key=lambda p: p.start - p.end)  # biggest first keeps both workers busy
    tasks: list[Task] = []
    group: list[Part] = []
    group_bytes = 0
    pack = max(split_bytes // 2, 1)
    for part in parts:
        group.append(part)
        group_bytes += part.end - part.start
        if group_bytes >= pack:
            tasks.append(Task(db_url, group, len(tasks), batch_rows))
            group, group_bytes = [], 0
    if group:
        tasks.append(Task(db_url, group, len(tasks), batch_rows))
    return tasks


def _run_tasks(
    store: Store | Callable[[], Store | None] | None, db_url: str, tasks: list[Task], workers: int | None,
    progress: Progress | None, pool_min_bytes: int, state: IngestState, report: IngestReport,
) -> tuple[list[TaskResult], Store | None]:
    """Run the tasks on forked worker processes (or here, when small); returns their results
    and the store opened meanwhile."""
    from loopmeter.telemetry.pricing import default_price_table

    total = sum(t.size for t in tasks)
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    default_price_table()  # loaded once here, inherited by forked workers
    if progress:
        progress(0, total)
    if workers > 1 and len(tasks) > 1 and total >= pool_min_bytes:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        queued = _is_sqlite_file(db_url)
        shared = IngestState(out_queue=ctx.Queue(maxsize=8), abort=ctx.Event(),  # bounded: memory stays flat
                             store_ready=None if queued else ctx.Event())
        next_task = ctx.Value("i", 0)
        procs = [ctx.Process(target=_worker, args=(tasks, next_task, shared), name=f"loopmeter-ingest-{i}")
                 for i in range(min(workers, len(tasks)))]
        for proc in procs:
            proc.start()
        try:
            opened = store() if callable(store) else store  # while the workers read
            if shared.store_ready is not None:
                shared.store_ready.set()
            sink = state.sink(db_url, opened) if queued else None
            results, added = _collect(shared, sink, tasks, procs, progress, total)
        except BaseException:
            _stop_workers(shared, procs)
            raise
        for proc in procs:
            proc.join()
        report.rows_added += added
        return results, opened
    opened = store() if callable(store) else store
    results = []
    done = 0
    for t in tasks:
        results.append(run_task(t, state, opened))
        done += t.size
        if progress:
            progress(done, total)
    return results, opened


def run(
    store: Store | Callable[[], Store | None] | None, db_url: str, work: list[FileWork], *,
    workers: int | None = None,
    progress: Progress | None = None, files_seen: int = 0,
    split_bytes: int = SPLIT_BYTES, pool_min_bytes: int = POOL_MIN_BYTES, batch_rows: int = BATCH_ROWS,
) -> IngestReport:
    """Read the planned work and store its rows; returns what was read and skipped.

    `store` may be a function opening it: worker processes then start reading while this
    process opens (and, for a new store, creates) the database. A SQLite file needs no Store
    (None): rows go through the stdlib writer.
    """
    t0 = time.perf_counter()
    report = IngestReport(files_seen=files_seen, files_read=len(work))
    tasks = tasks_for(db_url, work, split_bytes, batch_rows)
    # No cycles are made while reading: the cyclic GC only walked the ~150k new tuples per GB
    # again and again (5% of all CPU). Forked workers inherit it switched off.
    gc_was_on = gc.isenabled()
    gc.disable()
    state = IngestState()
    try:
        results, opened = _run_tasks(store, db_url, tasks, workers, progress, pool_min_bytes, state, report)
        parts = [p for r in results for p in r.parts]
        _finish_split_files(state, opened, db_url, work, tasks, parts)
    finally:
        if gc_was_on:
            gc.enable()
        state.close()
    for r in results:
        report.rows_added += r.rows_added
    for p in parts:
        report.bytes_read += p.end - p.start
        if p.malformed:
            report.malformed[p.path] = report.malformed.get(p.path, 0) + p.malformed
        if p.error:
            report.errors[p.path] = p.error
    report.seconds = time.perf_counter() - t0
    return report


def _finish_split_files(state: IngestState, store: Store | None, db_url: str, work: list[FileWork], tasks: list[Task],
                        results: list[PartResult]) -> None:
    """Save the cursor of a file read in ranges once every range is stored."""
    by_path: dict[str, list[PartResult]] = {}
    for r in results:
        by_path.setdefault(r.path, []).append(r)
    split = {str(p.work.path) for t in tasks for p in t.parts if not p.owns_cursor}
    cursors = []
    for w in work:
        key = str(w.path)
        if key not in split:
            continue
        pieces = sorted(by_path.get(key, []), key=lambda r: r.start)
        if any(r.error for r in pieces):
            continue  # read again next time; keys deduplicate what was stored
        end = pieces[-1].end if pieces else w.start
        cursors.append(_cursor(w, end, w.malformed_before + sum(r.malformed for r in pieces), {}))
    if cursors:
        state.sink(db_url, store).write([], cursors, [])


def ingest(
    store: Store, *, db_url: str | None = None, sources: Iterable[str] | None = None,
    paths: Iterable[Path] | None = None, env: dict[str, str] | None = None,
    workers: int | None = None, progress: Progress | None = None,
) -> IngestReport:
    """Discover, plan and read in one call (the API for code; the CLI splits the steps)."""
    url = db_url or str(store.engine.url.render_as_string(hide_password=False))
    files = discover(sources, paths, env)
    work = plan(files, load_cursors(url, store))
    if not work:
        return IngestReport(files_seen=len(files))
    return run(store, url, work, workers=workers, progress=progress, files_seen=len(files))
