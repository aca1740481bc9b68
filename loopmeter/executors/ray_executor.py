"""The `ray` executor: one Ray task per cell on a cluster (the `loopmeter[ray]` extra).

- Capability: a coding cell asks for one unit of the custom resource `loopmeter_sandbox`, which a
  node advertises when it has bubblewrap and the agent CLIs (`ray start --resources=...`); the
  units are that node's cells at a time. A cluster where no node offers it fails before any cell.
- Task files travel by content: each task directory is packed once (a deterministic tar), put in
  the object store once, keyed by its sha256, and unpacked by each node once into
  `$LOOPMETER_HOME/cache/tasks/<sha>`; the task is loaded (and validated) again from there.
- Results: the worker writes the child run, attempts, usage and the result row to the shared store
  itself, so a result survives the driver; the row is unique per cell (`uq_eval_cell`).
- Telemetry: a task flushes the spans and metrics it produced (OTLP, docs/deployment.md) before it
  returns, so a worker killed later, or one that lives long, loses or delays none of them.
- Faults: a worker or node that dies mid-cell is retried by Ray (`max_retries`, system failures
  only); the earlier child run is marked abandoned and one result row is left. Cancel interrupts
  the cell (the loop marks it cancelled, its sandbox is killed), then forces the worker out.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.errors import LoopmeterError
from loopmeter.executors.base import CellSpec, end_child_runs, run_cell, store_for, stored_result
from loopmeter.vocab import AttemptStatus, ErrorKind, RunStatus

if TYPE_CHECKING:
    from loopmeter.evals.runner import CellResult

CAPABILITY = "loopmeter_sandbox"
MAX_TASK_BYTES = 256 * 1024 * 1024  # one task's files, packed
CANCEL_GRACE_S = 10.0  # an interrupted cell's time to mark itself cancelled before its worker is killed
# The longest a task waits, before it returns, for the telemetry it produced to go out over OTLP.
# A loop (coding cells, attempts) flushes its own spans when it closes; what the worker's process-wide
# telemetry holds (model calls' GenAI metrics: model cells, the builtin agent) is flushed here.
FLUSH_TIMEOUT_S = 5.0

# Set for a cluster this process starts (`--ray-address auto`) and recommended for `ray start`
# (docs/deployment.md): no usage report leaves the machine; the memory monitor only acts near a full
# machine and a cell it kills is retried once, not forever. Not set: the raylet subreaper
# (`RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper`), under which bubblewrap hangs;
# a sandbox dies with its worker through `bwrap --die-with-parent` and its own PID namespace, an
# unsandboxed command (`--sandbox none`) through loopmeter/sandbox/reaper.py.
NODE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_memory_usage_threshold": "0.97",
    "RAY_task_oom_retries": "1",
}


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LoopmeterError("--executor ray needs Ray, which is not installed",
                             hint="pip install 'loopmeter[ray]' (on this machine and every node)") from None
    return ray


# -- task files by content ------------------------------------------------------

def pack_task(task_dir: Path) -> tuple[str, bytes]:
    """A task directory as a deterministic tar (sorted, no times or owners; links kept as links)."""
    buf = io.BytesIO()
    root = Path(task_dir)
    total = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = sorted(p for p in root.rglob("*") if "__pycache__" not in p.parts)
        for path in [root, *paths]:
            rel = Path(root.name) / path.relative_to(root)
            info = tar.gettarinfo(str(path), arcname=str(rel))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isfile():
                total += info.size
                if total > MAX_TASK_BYTES:
                    raise LoopmeterError(f"task {root.name} is over {MAX_TASK_BYTES >> 20} MiB",
                                         hint="a task's files travel to every node; keep data sets small")
                with open(path, "rb", opener=_no_follow) as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    data = buf.getvalue()
    return hashlib.sha256(data).hexdigest(), data


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def unpack_task(sha: str, data: bytes, cache: Path) -> Path:
    """The task directory for `sha` in this node's cache, unpacked once (checked against its hash)."""
    if hashlib.sha256(data).hexdigest() != sha:
        raise LoopmeterError(f"task files {sha[:12]} arrived damaged (hash mismatch)")
    dest = cache / sha
    if not (dest / ".complete").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{sha}.{os.getpid()}"
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")  # no absolute paths, no way out, no devices
        (tmp / ".complete").write_text(sha)
        try:
            tmp.rename(dest)
        except OSError:  # another worker of this node unpacked it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    (top,) = [p for p in dest.iterdir() if p.is_dir()]
    return top


# -- the Ray task -------------------------------------------------------------------

def node_label() -> str:
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def cell_task(spec: CellSpec, task_files: bytes | None) -> CellResult:
    """What a worker runs for one cell, of any kind: the cell (`run_cell_here`), then the telemetry it
    produced is flushed before its result leaves the worker."""
    from loopmeter.telemetry.otel import flush_telemetry

    try:
        return run_cell_here(spec, task_files)
    finally:
        flush_telemetry(FLUSH_TIMEOUT_S)


def run_cell_here(spec: CellSpec, task_files: bytes | None) -> CellResult:
    """Load the task from its files, run the cell, store its result."""
    from loopmeter.config import load_settings
    from loopmeter.evals.runner import save_result
    from loopmeter.tasks import load_task

    os.environ.pop("OMP_NUM_THREADS", None)  # Ray sets it per task; checks and agents should not inherit it
    node = node_label()
    if spec.task_sha and task_files is not None:
        task_dir = unpack_task(spec.task_sha, task_files, load_settings().home / "cache" / "tasks")
        task = load_task(task_dir)
        if task.id != spec.cell.task.id:
            raise LoopmeterError(f"task files {spec.task_sha[:12]} hold task {task.id}, not {spec.cell.task.id}")
        spec = replace(spec, cell=replace(spec.cell, task=task))
    store = store_for(spec)
    try:
        done = stored_result(store, spec)
        if done is not None:
            return done
        res = run_cell(spec, store, node=node)
        res.detail["node"] = node
        if res.error_kind != ErrorKind.CANCELLED:
            save_result(store, spec.run_id, spec.suite, spec.cell, res)
            res.stored = True
        return res
    finally:
        store.dispose()


class RayExecutor:
    name = "ray"

    def __init__(self, store: Any, address: str | None = None, *, capability: str = CAPABILITY,
                 num_cpus: float = 0.5, max_retries: int = 2):
        self.ray = import_ray()
        self.store = store
        self.capability = capability
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.address = address or os.environ.get("RAY_ADDRESS") or ""
        if not self.address:
            raise LoopmeterError("--executor ray needs a cluster to join",
                                 hint="--ray-address HOST:PORT (or RAY_ADDRESS), or --ray-address auto "
                                      "to start one on this machine")
        self._blobs: dict[str, Any] = {}
        self._specs: dict[Any, CellSpec] = {}  # submitted and not yet finished
        self._remote: Any = None
        started = time.monotonic()
        self._connect()
        self.connect_s = time.monotonic() - started

    def _connect(self) -> None:
        ray = self.ray
        for key, value in NODE_ENV.items():
            os.environ.setdefault(key, value)
        common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                  "namespace": "loopmeter", "ignore_reinit_error": True}
        try:
            if self.address == "auto":  # a one-machine cluster for this command
                from loopmeter.sandbox.probe import probe_bwrap

                cpus = os.cpu_count() or 1
                ray.init(address="local", num_cpus=cpus, object_store_memory=100 * 1024 * 1024,
                         resources={self.capability: cpus} if probe_bwrap().usable else {}, **common)
            else:
                common.pop("include_dashboard")
                ray.init(address=self.address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise LoopmeterError(f"cannot join the Ray cluster at {self.address}: {str(exc).splitlines()[0]}",
                                 hint="is `ray start --head` running there? `ray status --address ...` checks; a "
                                      "cluster with token authentication needs RAY_AUTH_MODE=token and its token "
                                      "here too (docs/deployment.md)") from None

    # -- before the first cell -------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def check_resources(self, needed: dict[str, float]) -> None:
        """Fail now, not by waiting forever, when no single live node offers `needed`."""
        nodes = self.nodes()
        if any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in needed.items()) for n in nodes):
            return
        have = sorted({k for n in nodes for k in n.get("Resources", {})
                       if not k.startswith("node:") and k not in ("memory", "object_store_memory")})
        wanted = ", ".join(f"{k}={v:g}" for k, v in needed.items())
        raise LoopmeterError(
            f"no node of the Ray cluster at {self.address} offers {wanted} ({len(nodes)} node(s); "
            f"resources: {', '.join(have) or 'none'})",
            hint=f"start a node that has bubblewrap and the agent CLIs with "
                 f"ray start --address HEAD:PORT --resources='{{\"{self.capability}\": 2}}'")

    def check_store(self) -> None:
        """A SQLite file cannot be one store for several machines."""
        nodes = self.nodes()
        if self.store.engine.url.get_backend_name() == "sqlite" and len(nodes) > 1:
            raise LoopmeterError(
                f"the Ray cluster has {len(nodes)} nodes but the store is a SQLite file on this machine",
                hint="set LOOPMETER_DB_URL to one PostgreSQL database on every node (docs/deployment.md); "
                     "SQLite works only with a one-node cluster (--ray-address auto)")

    def resources_for(self, spec: CellSpec) -> dict[str, float]:
        return {} if spec.cell.task.kind == "model" else {self.capability: 1}

    def prepare(self, specs: list[CellSpec]) -> list[CellSpec]:
        self.check_store()
        for needed in {tuple(sorted(self.resources_for(s).items())) for s in specs}:
            if needed:
                self.check_resources(dict(needed))
        packed: dict[Path, str] = {}
        out = []
        for spec in specs:
            path = spec.cell.task.path
            if path is None:
                out.append(spec)
                continue
            if path not in packed:
                sha, data = pack_task(path)
                if sha not in self._blobs:
                    self._blobs[sha] = self.ray.put(data)  # once per task; nodes fetch it once
                packed[path] = sha
            out.append(replace(spec, task_sha=packed[path]))
        return out

    # -- running -------------------------------------------------------------------
    def submit(self, spec: CellSpec) -> Any:
        if self._remote is None:
            self._remote = self.ray.remote(cell_task)
        blob = self._blobs.get(spec.task_sha or "")
        ref = self._remote.options(
            name=spec.cell_id, num_cpus=self.num_cpus, resources=self.resources_for(spec),
            max_retries=self.max_retries, retry_exceptions=False,
        ).remote(spec, blob)
        self._specs[ref] = spec
        return ref

    def wait(self, handles: list[Any], timeout: float | None = None) -> tuple[list[tuple[Any, CellResult]], list[Any]]:
        from loopmeter.evals.runner import CellResult

        ray = self.ray
        ready, running = ray.wait(handles, num_returns=1, timeout=timeout)
        done: list[tuple[Any, CellResult]] = []
        for ref in ready:
            self._specs.pop(ref, None)
            try:
                done.append((ref, ray.get(ref)))
            except ray.exceptions.TaskCancelledError:
                continue  # unstored: a resume runs it again
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, LoopmeterError):
                    raise exc.cause from None
                done.append((ref, CellResult(False, 0.0, error_kind=ErrorKind.INFRA, detail={
                    "error": f"{type(exc.cause).__name__}: {exc.cause}"})))
            except ray.exceptions.RayError as exc:  # the worker or node died more times than max_retries
                done.append((ref, CellResult(False, 0.0, error_kind=ErrorKind.INFRA, detail={
                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]})))
        return done, list(running)

    def cancel(self, handles: list[Any]) -> None:
        """Interrupt every cell (its loop marks it cancelled and kills its sandbox), then kill what is left."""
        ray = self.ray
        for ref in handles:
            ray.cancel(ref, force=False)
        _, left = ray.wait(handles, num_returns=len(handles), timeout=CANCEL_GRACE_S) if handles else ([], [])
        for ref in left:
            ray.cancel(ref, force=True)
        # a worker killed before its loop could record the cancel leaves its child run "running"
        for ref in handles:
            spec = self._specs.get(ref)
            if spec is not None:
                end_child_runs(self.store, spec, RunStatus.CANCELLED, AttemptStatus.CANCELLED, "cancelled")

    def close(self) -> None:
        self.ray.shutdown()


# -- attempts of `loopmeter run` / `resume` ---------------------------------------------------------

def attempt_task(spec: Any, base: bytes, task_files: bytes | None) -> dict[str, Any]:
    """What a worker runs for one attempt (loopmeter/executors/attempts.py run_attempt_here)."""
    import ray

    from loopmeter.executors.attempts import run_attempt_here
    from loopmeter.telemetry.otel import flush_telemetry

    try:
        out = run_attempt_here(spec, base, task_files)
    finally:
        flush_telemetry(FLUSH_TIMEOUT_S)  # as a cell's (cell_task)
    out["node_id"] = ray.get_runtime_context().get_node_id()
    return out


class RayAttempts:
    """A run's attempts on the cluster, one Ray task each, on nodes offering the capability.

    The base commit travels once per run as a bundle, the task's files once by content; each
    attempt's branch comes back as a bundle and is taken into the run's repository
    (loopmeter/executors/attempts.py import_attempt), so `runs show` and `apply` work as locally."""

    name = "ray"

    def __init__(self, store: Any, address: str | None = None, *, capability: str = CAPABILITY,
                 max_retries: int = 2):
        import threading

        self.cells = RayExecutor(store, address=address, capability=capability)
        try:
            self.cells.check_store()
            self.cells.check_resources({capability: 1})
        except BaseException:
            self.cells.close()
            raise
        self.capability = capability
        self.max_retries = max_retries
        self._lock = threading.Lock()
        self._bases: dict[tuple[str, str], tuple[str, str, Any]] = {}  # (run, base commit) -> (ref, sha, object)
        self._tasks: dict[Path, tuple[str, Any]] = {}  # task dir -> (sha, object)
        self._remote: Any = None
        self._running: set[Any] = set()  # attempts submitted and not yet returned

    def _shipped(self, rt: Any, base_commit: str) -> tuple[tuple[str, str], Any, str | None, Any]:
        from loopmeter.executors.attempts import base_bundle

        ray = self.cells.ray
        with self._lock:
            key = (rt.run_id, base_commit)
            if key not in self._bases:
                ref, sha, data = base_bundle(rt.repo_path, base_commit, rt.run_id)
                self._bases[key] = (ref, sha, ray.put(data))
            ref, sha, base_obj = self._bases[key]
            task_sha = task_obj = None
            path = rt.task.path if rt.task is not None else None
            if path is not None:
                if path not in self._tasks:
                    tsha, tdata = pack_task(path)
                    self._tasks[path] = (tsha, ray.put(tdata))
                task_sha, task_obj = self._tasks[path]
            if self._remote is None:
                self._remote = ray.remote(attempt_task)
        return (ref, sha), base_obj, task_sha, task_obj

    def run_attempt(self, rt: Any, attempt_id: str, payload: Any) -> None:
        """Run one attempt's graph on a node until it finishes or asks a question; take its branch back."""
        from loopmeter.agents.loop_records import _Cancelled
        from loopmeter.executors.attempts import BundleRefused, attempt_spec, import_attempt
        from loopmeter.executors.base import public_store_url
        from loopmeter.store import Attempt

        ray = self.cells.ray
        row = rt.store.get(Attempt, attempt_id)
        base, base_obj, task_sha, task_obj = self._shipped(rt, row.base_commit)
        spec = attempt_spec(rt, attempt_id, payload, base, task_sha, public_store_url(rt.store))
        options: dict[str, Any] = {}
        earlier = (rt.config.get("attempt_nodes") or {}).get(attempt_id)
        if earlier and any(n.get("NodeID") == earlier for n in self.cells.nodes()):
            # continue where its worktree and its agent's state are; elsewhere only when that node is busy or gone
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=earlier, soft=True)
        ref = self._remote.options(
            name=f"{rt.run_id}/{attempt_id}", num_cpus=self.cells.num_cpus, resources={self.capability: 1},
            max_retries=self.max_retries, retry_exceptions=False, **options,
        ).remote(spec, base_obj, task_obj)
        with self._lock:
            self._running.add(ref)
        shown = 0.0
        try:
            while not ray.wait([ref], timeout=0.5)[0]:
                if rt.cancel.is_set():  # Ctrl-C
                    self._cancel([ref])
                    raise _Cancelled()
                if rt.on_event is not None and time.monotonic() - shown >= 1.0:
                    shown = time.monotonic()
                    self._progress(rt, attempt_id, "remote")
            out = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            raise _Cancelled() from None
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, LoopmeterError):
                raise exc.cause from None
            raise LoopmeterError(f"the attempt failed on its node: {type(exc.cause).__name__}: {exc.cause}"[:2000]
                                 ) from None
        except ray.exceptions.RayError as exc:  # its worker or node died more times than max_retries
            raise LoopmeterError(f"the attempt's worker died: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
                                 ) from None
        finally:
            with self._lock:
                self._running.discard(ref)
        if not isinstance(out, dict):
            raise LoopmeterError("the attempt's worker returned no result")
        if out.get("node_id"):
            self._remember_node(rt, attempt_id, str(out["node_id"]))
        if not out.get("finished"):
            return  # waiting for an answer: the checkpoint holds its question
        try:
            head = import_attempt(Path(rt.config["repo"]), row.branch, row.base_commit, out.get("head"),
                                  out.get("bundle"))
        except BundleRefused:
            rt._set_attempt(attempt_id, head_commit=None)
            raise
        rt._set_attempt(attempt_id, head_commit=head)
        if rt.on_event is not None:
            self._progress(rt, attempt_id, "done")

    def _progress(self, rt: Any, attempt_id: str, state: str) -> None:
        """The attempt's progress as the worker stored it, for the live display (events of a local run)."""
        from sqlmodel import func, select

        from loopmeter.store import Attempt, Iteration

        row = rt.store.get(Attempt, attempt_id)
        if row is None:
            return
        with rt.store.session() as s:
            iteration = s.exec(select(func.max(Iteration.n)).where(Iteration.attempt_id == attempt_id)).one()
        cost, tokens = rt.cost_so_far(attempt_id)
        rt.emit(attempt_id, state, agent=row.agent, model=row.model, iteration=iteration, tokens=tokens,
                cost_usd=cost,
                status=row.status if state == "done" else None, stop_reason=row.stop_reason)

    def _remember_node(self, rt: Any, attempt_id: str, node_id: str) -> None:
        """Where the attempt last ran (the run's config, `attempt_nodes`): a resume or an answer goes there."""
        import json

        with self._lock:
            nodes = rt.config.setdefault("attempt_nodes", {})
            if nodes.get(attempt_id) == node_id:
                return
            nodes[attempt_id] = node_id
            rt._set_run(config=json.dumps(rt.config))

    def _cancel(self, refs: list[Any]) -> None:
        """Interrupt these attempts (each loop kills its sandbox), then kill the workers still running."""
        ray = self.cells.ray
        for ref in refs:
            ray.cancel(ref, force=False)
        _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S) if refs else ([], [])
        for ref in left:
            ray.cancel(ref, force=True)

    def close(self) -> None:
        with self._lock:
            running = list(self._running)
        if running:  # the run ended (Ctrl-C, an error) with attempts still out: none outlives it
            self._cancel(running)
        self.cells.close()
