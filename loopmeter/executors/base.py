"""The executor protocol, the spec a cell travels as, and `run_cell`, which both executors call.

A cell travels by content: its `Cell` (configuration, task definition, epoch, model item),
the eval's options, the store's URL without a password, the eval's policy file as the driver read
it (`PolicyText`; a preset travels as its name), and — for a remote executor — the content hash
of its task's files, shipped once per task. It carries no key: each node reads its
own keyring or environment and the policy decides what an agent gets. Its stable id
(`Cell.attempt_key`: run, configuration, task, epoch) is the idempotency key: the result row is
unique on those four (`uq_eval_cell`), so a cell run twice (a retry after a worker died, two
resumes at once) leaves one row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from loopmeter.errors import LoopmeterError
from loopmeter.vocab import AttemptStatus, ErrorKind, RunStatus

if TYPE_CHECKING:
    from loopmeter.evals.runner import Cell, CellResult, EvalOptions
    from loopmeter.policies import PolicyText

ABANDONED = "infra: abandoned (its worker stopped; the cell ran again)"


@dataclass(frozen=True)
class CellSpec:
    """Everything a node needs to run one cell; picklable, and free of secrets."""

    cell_id: str  # Cell.attempt_key(run_id)
    run_id: str  # the eval run
    suite: str
    cell: Cell
    options: EvalOptions
    remaining_usd: float | None  # the eval's budget left when the cell was submitted
    store_url: str  # no password in it (public_store_url)
    task_sha: str | None = None  # content hash of the task's files (remote executors)
    policy: PolicyText | None = None  # the eval's policy file, by content (None: a preset, by name)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.cell.config.name, self.cell.task_id, self.cell.epoch)


class Executor(Protocol):
    """Runs cells somewhere and hands back their results; at most the caller's cap in flight."""

    name: str

    def prepare(self, specs: list[CellSpec]) -> list[CellSpec]:
        """Check the executor can run these cells (fail fast) and ship what they need; the specs to submit."""
        ...

    def submit(self, spec: CellSpec) -> Any:
        """Start one cell; a handle for wait/cancel."""
        ...

    def wait(self, handles: list[Any], timeout: float | None = None) -> tuple[list[tuple[Any, CellResult]], list[Any]]:
        """Block until at least one handle finished (or timeout): ([(handle, result)], still running)."""
        ...

    def cancel(self, handles: list[Any]) -> None:
        """Stop these cells; a cancelled cell stores no result, so a resume runs it again."""
        ...

    def close(self) -> None: ...


def public_store_url(store: Any) -> str:
    """The store's URL as a cell may carry it: a password stays on the driver (nodes bring their own)."""
    url = store.engine.url
    return str(url.render_as_string(hide_password=True) if url.password else url.render_as_string())


def store_for(spec: CellSpec) -> Any:
    """The store a node writes this cell to (open_store_url)."""
    return open_store_url(spec.store_url)


def open_store_url(store_url: str) -> Any:
    """The store a node writes to: its own configured URL when it names the same database as the
    driver's `store_url` (it may hold the password), else the driver's URL when that needs no password."""
    from loopmeter.config import load_settings, mask_url
    from loopmeter.store import open_store

    own = load_settings().db_url
    if own and _same_database(mask_url(own), store_url):
        return open_store(own, migrate=False)
    if "***" in store_url:
        raise LoopmeterError(f"this node has no credentials for the store {store_url}",
                             hint="set LOOPMETER_DB_URL on every node to the same PostgreSQL database")
    return open_store(store_url, migrate=False)


def _same_database(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        return url.replace("postgresql+psycopg://", "postgresql://").split("?", 1)[0].rstrip("/")

    return norm(a) == norm(b)


def run_cell(spec: CellSpec, store: Any, *, node: str | None = None) -> CellResult:
    """Run one cell to its result. An infrastructure failure of the cell becomes an `infra` result;
    bad input (LoopmeterError) propagates."""
    from loopmeter.evals.runner import CellResult, run_coding_cell, run_model_cell

    cell = spec.cell
    try:
        if cell.task.kind == "model":
            return run_model_cell(cell, spec.run_id, spec.options, store)
        abandon_earlier(store, spec)
        return run_coding_cell(cell, spec.run_id, spec.options, store, spec.remaining_usd, spec.suite,
                               cell_meta={"cell_id": spec.cell_id, "node": node},
                               policy=spec.policy.load() if spec.policy is not None else None)
    except LoopmeterError:
        raise
    except Exception as exc:  # an infrastructure failure of this one cell: recorded, the eval goes on
        import traceback

        return CellResult(False, 0.0, error_kind=ErrorKind.INFRA, detail={
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=12)[-4000:]})


def stored_result(store: Any, spec: CellSpec) -> CellResult | None:
    """The result this cell already has in the store (its worker stored it, then died before returning;
    or another resume ran it): a retry returns it instead of running the cell again."""
    from sqlmodel import select

    from loopmeter.evals.runner import CellResult
    from loopmeter.store import EvalResult

    config, task_id, epoch = spec.key
    with store.session() as s:
        row = s.exec(select(EvalResult).where(EvalResult.run_id == spec.run_id, EvalResult.config == config,
                                              EvalResult.task_id == task_id, EvalResult.epoch == epoch)).first()
    if row is None:
        return None
    try:
        detail = json.loads(row.detail or "{}")
    except ValueError:
        detail = {}
    return CellResult(
        passed=bool(row.passed), score=row.score, wall_s=row.wall_s, latency_ms=row.latency_ms,
        attempt_id=row.attempt_id, input_tokens=row.input_tokens, cache_read_tokens=row.cache_read_tokens,
        cache_write_tokens=row.cache_write_tokens, output_tokens=row.output_tokens,
        reasoning_tokens=row.reasoning_tokens, cost_usd=row.cost_usd,
        error_kind=ErrorKind(row.error_kind) if row.error_kind else None,
        detail=detail if isinstance(detail, dict) else {}, stored=True)


def child_runs(store: Any, eval_run_id: str) -> list[Any]:
    """The child runs (one per coding cell attempt) of an eval run, read from their eval_meta."""
    from sqlmodel import select

    from loopmeter.store import Run

    marker = json.dumps({"eval_run_id": eval_run_id})[1:-1]  # '"eval_run_id": "..."' as json.dumps writes it
    with store.session() as s:
        rows = list(s.exec(select(Run).where(Run.kind == "eval", Run.config.contains(marker))))  # type: ignore[union-attr]
    return rows


def eval_meta(run: Any) -> dict[str, Any]:
    try:
        meta = json.loads(run.config or "{}").get("eval_meta") or {}
    except (ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def abandon_earlier(store: Any, spec: CellSpec) -> int:
    """Child runs of this cell still marked running belong to a worker that died: mark them ended, so
    only the run now starting is live. Returns how many."""
    return end_child_runs(store, spec, RunStatus.ERROR, AttemptStatus.ERROR, ABANDONED, ErrorKind.INFRA)


def end_child_runs(store: Any, spec: CellSpec, run_status: RunStatus, attempt_status: AttemptStatus,
                   reason: str, error_kind: ErrorKind | None = None) -> int:
    """Mark this cell's unfinished child runs (and their attempts) ended; returns how many."""
    from sqlmodel import select

    from loopmeter.records import utcnow
    from loopmeter.store import Attempt

    stale = [r for r in child_runs(store, spec.run_id)
             if eval_meta(r).get("cell_id") == spec.cell_id and r.status in (RunStatus.RUNNING, RunStatus.WAITING)]
    for run in stale:
        with store.session() as s:
            attempts = list(s.exec(select(Attempt).where(Attempt.run_id == run.id)))
        for att in attempts:
            if not AttemptStatus(att.status).finished:
                att.status, att.stop_reason, att.error_kind = attempt_status, reason, error_kind
                att.ended_at = utcnow()
                store.save(att)
        run.status, run.ended_at = run_status, utcnow()
        store.save(run)
    return len(stale)
