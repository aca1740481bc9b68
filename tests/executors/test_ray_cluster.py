"""The `ray` executor on a real local Ray cluster: a head with no CPUs plus two worker nodes on
loopback that advertise `loopmeter_sandbox` (ray.cluster_utils.Cluster, one per module).

Marked `ray`; skipped when the `loopmeter[ray]` extra or bubblewrap is missing. The cells run the
real loop and sandbox; results go to the real PostgreSQL server of tests/conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopmeter.errors import LoopmeterError
from loopmeter.sandbox.probe import probe_bwrap

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(not probe_bwrap().usable, reason="bubblewrap is not usable here")]

GOLD = Path(__file__).resolve().parents[2] / "loopmeter" / "evals" / "gold"
NODE_ARGS = {"num_cpus": 1, "resources": {"loopmeter_sandbox": 1}, "object_store_memory": 80 * 1024 * 1024}


class OtlpSink:
    """An OTLP/HTTP endpoint on loopback that keeps every request body (the nodes export to it)."""

    def __init__(self) -> None:
        import gzip
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies: list[tuple[str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                bodies.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def traces(self) -> bytes:
        return b"".join(body for path, body in self.bodies if path == "/v1/traces")

    def token_usage(self, model: str) -> dict[str, tuple[int, float]]:
        """The `gen_ai.client.token.usage` points received for `model`: {token type: (calls, tokens)}.
        Each worker process exports cumulative points, so the largest of each of its series counts."""
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

        largest: dict[tuple[int, str], tuple[int, float]] = {}
        for path, body in list(self.bodies):
            if path != "/v1/metrics":
                continue
            for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                for metric in (m for sm in rm.scope_metrics for m in sm.metrics):
                    if metric.name != "gen_ai.client.token.usage":
                        continue
                    for point in metric.histogram.data_points:
                        attrs = {a.key: a.value.string_value for a in point.attributes}
                        if attrs.get("gen_ai.request.model") == model:
                            key = (point.start_time_unix_nano, attrs["gen_ai.token.type"])
                            largest[key] = max(largest.get(key, (0, 0.0)), (point.count, point.sum))
        out: dict[str, tuple[int, float]] = {}
        for (_, kind), (count, tokens) in largest.items():
            calls, total = out.get(kind, (0, 0.0))
            out[kind] = (calls + count, total + tokens)
        return out


class RayTestCluster:
    """A head (no CPUs, no capability) now; two sandbox nodes once a test asks for them."""

    def __init__(self, node_home: Path):
        from ray.cluster_utils import Cluster

        self.node_home = node_home
        self.otlp = OtlpSink()
        started = time.monotonic()
        with self._node_env():
            self.cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 * 1024 * 1024})
        self.head_s = time.monotonic() - started
        self.nodes_s: float | None = None
        self.workers: list[Any] = []

    @contextlib.contextmanager
    def _node_env(self) -> Iterator[None]:
        """The environment the nodes' processes start with (and keep)."""
        from loopmeter.executors.ray_executor import NODE_ENV

        with pytest.MonkeyPatch.context() as env:
            for key, value in NODE_ENV.items():
                env.setenv(key, value)
            env.setenv("LOOPMETER_HOME", str(self.node_home))  # each node's own home: caches, worktrees
            env.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp.url)  # each node's own collector
            yield

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def with_two_nodes(self) -> RayTestCluster:
        if not self.workers:
            started = time.monotonic()
            with self._node_env():
                self.workers = [self.cluster.add_node(**NODE_ARGS) for _ in range(2)]
            self.cluster.wait_for_nodes()
            self.nodes_s = time.monotonic() - started
            print(f"\nray cluster: two worker nodes {self.nodes_s:.1f}s")
        return self

    def raylet_pids(self) -> set[int]:
        return {p.process.pid for node in [self.cluster.head_node, *self.workers]
                for p in node.all_processes.get("raylet", [])}


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    c = RayTestCluster(tmp_path_factory.mktemp("raynode"))
    print(f"\nray cluster: head {c.head_s:.1f}s")
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.cluster.shutdown()
    c.otlp.server.shutdown()


@pytest.fixture
def cluster(bare_cluster: RayTestCluster) -> RayTestCluster:
    return bare_cluster.with_two_nodes()


@pytest.fixture
def ray_executor(cluster: RayTestCluster, request: pytest.FixtureRequest) -> Any:
    from loopmeter.executors.ray_executor import RayExecutor

    store = request.getfixturevalue("pg_store")
    ex = RayExecutor(store, address=cluster.address)
    yield ex
    ex.close()


def slow_suite(dest: Path, n: int, sleep_s: float) -> Path:
    """N tasks whose reference solution (solve.sh, run in the sandbox by `oracle`) sleeps first."""
    for i in range(n):
        task = dest / f"slow-{i}"
        (task / "repo").mkdir(parents=True)
        (task / "repo" / "README").write_text("slow task\n")
        (task / "solution").mkdir()
        (task / "solution" / "solve.sh").write_text(f"sleep {sleep_s}\necho done > done.txt\n")
        (task / "task.toml").write_text(
            f'id = "slow-{i}"\ninstruction = "write done.txt"\ncheck = "test -f done.txt"\ntime_limit_s = 120\n')
    return dest


def eval_rows(store: Any, run_id: str) -> list[Any]:
    from sqlmodel import select

    from loopmeter.store import EvalResult

    with store.session() as s:
        return list(s.exec(select(EvalResult).where(EvalResult.run_id == run_id)))


# -- capability and store checks (fast) ------------------------------------------------------

def test_a_missing_capability_fails_fast_and_stores_no_run(bare_cluster: RayTestCluster, store: Any) -> None:
    import shutil

    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.store import Run

    # aider is not installed on this machine: whether a node has it is that node's business
    agents = ["oracle"] if shutil.which("aider") else ["oracle", "aider"]
    started = time.monotonic()
    with pytest.raises(LoopmeterError) as info:
        start_eval(GOLD, agents, EvalOptions(), store=store, executor="ray", ray_address=bare_cluster.address)
    assert time.monotonic() - started < 60  # the connect itself is slow on 2 cores; it does not wait for a node
    assert "loopmeter_sandbox" in info.value.message and "1 node(s)" in info.value.message
    assert "ray start" in (info.value.hint or "")
    assert store.count(Run) == 0
    ray.shutdown()


def test_sqlite_store_is_refused_with_several_nodes(cluster: RayTestCluster, store: Any) -> None:
    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.store import Run

    with pytest.raises(LoopmeterError) as info:
        start_eval(GOLD, ["oracle"], EvalOptions(), store=store, executor="ray", ray_address=cluster.address)
    assert "SQLite" in info.value.message and "3 nodes" in info.value.message
    assert "PostgreSQL" in (info.value.hint or "")
    assert store.count(Run) == 0
    ray.shutdown()


# -- parity with local ---------------------------------------------------------------------------

def test_gold_oracle_and_nop_give_the_same_per_task_results_as_local(ray_executor: Any, pg_store: Any,
                                                                    store: Any, cluster: RayTestCluster) -> None:
    from loopmeter.evals.runner import EvalOptions, start_eval

    options = EvalOptions(concurrency=2)
    t0 = time.monotonic()
    local = start_eval("gold", ["oracle", "nop"], options, store=store)
    t1 = time.monotonic()
    remote = start_eval("gold", ["oracle", "nop"], options, store=pg_store, executor=ray_executor)
    t2 = time.monotonic()
    print(f"\ngold oracle+nop: local {t1 - t0:.1f}s, ray (2 nodes) {t2 - t1:.1f}s")
    assert local.status == remote.status == "completed"

    def per_task(rows: list[Any]) -> dict[tuple[str, str, int], tuple[bool, str | None]]:
        return {(r.config, r.task_id, r.epoch): (bool(r.passed), r.error_kind) for r in rows}

    local_rows, remote_rows = eval_rows(store, local.run_id), eval_rows(pg_store, remote.run_id)
    assert len(remote_rows) == len(local_rows) == remote.total >= 24
    errors = [(r.config, r.task_id, r.detail) for r in [*local_rows, *remote_rows] if r.error_kind]
    assert per_task(remote_rows) == per_task(local_rows), errors
    assert {v for k, v in per_task(remote_rows).items() if k[0] == "oracle"} == {(True, None)}
    import json

    nodes = {json.loads(r.detail)["node"] for r in remote_rows}
    assert len(nodes) == 2  # cells ran on both sandbox nodes, none on the head
    # each worker exported its cell's spans to the node's OTLP endpoint and flushed them before returning
    from loopmeter.executors.base import child_runs

    spans, children = cluster.otlp.traces(), child_runs(pg_store, remote.run_id)
    assert len(children) == remote.total and all(c.id.encode() in spans for c in children)


# -- faults --------------------------------------------------------------------------------------

def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cell_workers(cluster: RayTestCluster) -> list[int]:
    """PIDs of this cluster's workers running a cell now (Ray titles them `ray::<cell id>`)."""
    raylets = cluster.raylet_pids()
    found = []
    for pid in [p for r in raylets for p in _descendants(r)]:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ev-"):
                found.append(pid)
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_killed_mid_cell_is_retried_and_leaves_one_row(ray_executor: Any, pg_store: Any, cluster: RayTestCluster,
                                                               tmp_path: Path) -> None:
    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.executors.base import ABANDONED, child_runs
    from loopmeter.store import Attempt

    suite = slow_suite(tmp_path / "suite", 1, 4)
    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.setdefault("outcome", start_eval(
        suite, ["oracle"], EvalOptions(concurrency=1), store=pg_store, executor=ray_executor)))
    runner.start()

    def sandboxed_sleep() -> tuple[int, list[int]] | None:
        for worker in _cell_workers(cluster):
            tree = _descendants(worker)
            names = [Path(f"/proc/{p}/comm").read_text().strip() for p in tree if _alive(p)]
            if "sleep" in names:
                return worker, tree
        return None

    worker, tree = _wait_for(sandboxed_sleep, 120, "the cell's sandboxed solve.sh")
    os.kill(worker, signal.SIGKILL)
    _wait_for(lambda: not any(_alive(p) for p in tree), 15, "the killed worker's sandbox to die with it")
    runner.join(180)
    outcome = box["outcome"]
    assert outcome.status == "completed"
    (row,) = eval_rows(pg_store, outcome.run_id)
    assert row.passed and row.error_kind is None
    children = child_runs(pg_store, outcome.run_id)
    assert len(children) == 2  # the killed try and the retry
    with pg_store.session() as s:
        from sqlmodel import select

        first = [a for a in s.exec(select(Attempt)) if a.run_id in {c.id for c in children} and a.id != row.attempt_id]
    assert [(a.stop_reason, a.error_kind) for a in first] == [(ABANDONED, "infra")]


def test_a_cell_whose_worker_died_past_its_retries_is_stored_as_an_infra_failure(
        cluster: RayTestCluster, pg_store: Any, tmp_path: Path) -> None:
    """The worker stores a cell's row itself; one that died before it could (and is not retried) must
    still leave a row, by the driver: else the eval said "completed" with the cell missing."""
    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.executors.ray_executor import RayExecutor

    ex = RayExecutor(pg_store, address=cluster.address, max_retries=0)
    suite = slow_suite(tmp_path / "suite", 1, 30)
    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.setdefault("outcome", start_eval(
        suite, ["oracle"], EvalOptions(concurrency=1), store=pg_store, executor=ex)))
    runner.start()
    try:
        def busy_worker() -> int | None:
            for worker in _cell_workers(cluster):
                if any(Path(f"/proc/{p}/comm").read_text().strip() == "sleep" for p in _descendants(worker)
                       if _alive(p)):
                    return worker
            return None

        os.kill(_wait_for(busy_worker, 120, "the cell's sandboxed solve.sh"), signal.SIGKILL)
        runner.join(120)
    finally:
        ex.close()
    outcome = box["outcome"]
    assert (outcome.status, outcome.ran) == ("completed", 1)
    (row,) = eval_rows(pg_store, outcome.run_id)
    assert (row.passed, row.error_kind) == (False, "infra")
    assert "WorkerCrashedError" in json.loads(row.detail)["error"]


def test_cancel_leaves_cells_unstored_and_resume_finishes_them(ray_executor: Any, pg_store: Any, tmp_path: Path) -> None:
    from loopmeter.evals.runner import EvalOptions, resume_eval, start_eval
    from loopmeter.evals.status import eval_status

    suite = slow_suite(tmp_path / "suite", 2, 30)
    cancel = threading.Event()
    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.setdefault("outcome", start_eval(
        suite, ["oracle"], EvalOptions(concurrency=2), store=pg_store, executor=ray_executor, cancel=cancel)))
    runner.start()
    from loopmeter.store import Run

    def both_running() -> dict[str, Any] | None:
        runs = [r for r in _all(pg_store, Run) if r.kind == "eval" and r.task_id is None]
        if not runs:
            return None
        st = eval_status(pg_store, runs[0].id)
        return st if len(st["running"]) == 2 else None

    status = _wait_for(both_running, 120, "both cells running")
    assert {c["node"].split("/")[0] for c in status["running"]} and all(c["node"] for c in status["running"])
    assert len({c["node"] for c in status["running"]}) == 2  # one per sandbox node
    started = time.monotonic()
    cancel.set()
    runner.join(60)
    assert time.monotonic() - started < 30  # not the 30 s the cells sleep
    outcome = box["outcome"]
    assert outcome.status == "cancelled"
    assert eval_rows(pg_store, outcome.run_id) == []
    after = eval_status(pg_store, outcome.run_id)
    assert (after["pending"], after["running"], after["done"]) == (2, [], 0)

    # the sleeps are shortened before the resume, so it finishes quickly: the task files travel again
    for solve in suite.glob("*/solution/solve.sh"):
        solve.write_text("echo done > done.txt\n")
    again = resume_eval(outcome.run_id, store=pg_store, executor=ray_executor)
    assert again.status == "completed" and again.ran == 2
    rows = eval_rows(pg_store, outcome.run_id)
    assert len(rows) == 2 and all(r.passed for r in rows), [r.detail for r in rows]


def _all(store: Any, model: Any) -> list[Any]:
    from sqlmodel import select

    with store.session() as s:
        return list(s.exec(select(model)))


def test_a_node_removed_mid_cell_has_its_cell_rescheduled(ray_executor: Any, pg_store: Any, cluster: RayTestCluster,
                                                          tmp_path: Path) -> None:
    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.evals.status import eval_status
    from loopmeter.store import Run

    suite = slow_suite(tmp_path / "suite", 1, 6)
    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.setdefault("outcome", start_eval(
        suite, ["oracle"], EvalOptions(concurrency=1), store=pg_store, executor=ray_executor)))
    runner.start()

    def running_node() -> str | None:
        runs = [r for r in _all(pg_store, Run) if r.kind == "eval" and r.task_id is None]
        st = eval_status(pg_store, runs[0].id) if runs else None
        return st["running"][0]["node"] if st and st["running"] else None

    node_label = _wait_for(running_node, 120, "the cell to start")
    (node,) = [n for n in cluster.workers if n.node_id.startswith(node_label.split("/")[1])]
    cluster.cluster.remove_node(node)
    cluster.workers.remove(node)
    runner.join(180)
    outcome = box["outcome"]
    assert outcome.status == "completed"
    (row,) = eval_rows(pg_store, outcome.run_id)
    import json

    assert row.passed and json.loads(row.detail)["node"] != node_label  # ran again on the other node
    with cluster._node_env():  # back to two sandbox nodes for whatever runs next
        cluster.workers.append(cluster.cluster.add_node(**NODE_ARGS))


def test_ctrl_c_on_the_cli_cancels_every_cell_and_eval_resume_finishes_them(cluster: RayTestCluster, pg_store: Any,
                                                                            tmp_path: Path) -> None:
    import json
    import subprocess

    from loopmeter.evals.status import eval_status
    from loopmeter.store import Run
    from tests.conftest import loopmeter_cmd

    suite = slow_suite(tmp_path / "suite", 2, 30)
    url = pg_store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    env = {**os.environ, "LOOPMETER_HOME": str(tmp_path / "home"), "LOOPMETER_DB_URL": url,
           "RAY_ADDRESS": cluster.address}  # --ray-address falls back to it
    proc = subprocess.Popen(loopmeter_cmd("eval", "run", str(suite), "--agent", "oracle", "--executor", "ray",
                                          "--json"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def both_running() -> str | None:
            runs = [r for r in _all(pg_store, Run) if r.kind == "eval" and r.task_id is None]
            return runs[0].id if runs and len(eval_status(pg_store, runs[0].id)["running"]) == 2 else None

        run_id = _wait_for(both_running, 120, "both cells running")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    after = eval_status(pg_store, run_id)
    assert (after["status"], after["pending"], after["running"], after["done"]) == ("cancelled", 2, [], 0)

    for solve in suite.glob("*/solution/solve.sh"):
        solve.write_text("echo done > done.txt\n")
    out = subprocess.run(loopmeter_cmd("eval", "resume", run_id, "--executor", "ray", "--json"), env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    (oracle,) = summary["configs"]
    assert (oracle["n_tasks"], oracle["pass_rate"], oracle["errors"]) == (2, 1.0, 0)
    assert eval_status(pg_store, run_id)["done"] == 2


def test_model_cells_run_on_the_cluster_and_store_their_usage(ray_executor: Any, pg_store: Any,
                                                             cluster: RayTestCluster) -> None:
    from loopmeter.evals.runner import EvalOptions, start_eval
    from tests.servers.openai_server import OpenAIServer, text

    model = "openai/gpt-4o-mini"
    exported: list[tuple[int, int]] = []  # (cells back at the driver, model calls in the OTLP sink by then)

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "cell":
            exported.append((event["done"], cluster.otlp.token_usage(model).get("input", (0, 0.0))[0]))

    with OpenAIServer(default=text("12", prompt_tokens=30, completion_tokens=2)) as server:
        remote = start_eval("model-arith", [model], EvalOptions(concurrency=2, api_base=server.base_url),
                            store=pg_store, executor=ray_executor, on_event=on_event)
    assert remote.status == "completed" and remote.ran == 10
    # each worker flushed its cell's GenAI metrics to the node's OTLP endpoint before returning the result
    # (not a minute later, or when the worker exits): every result the driver got had its call exported
    assert len(exported) == 10 and all(calls >= done for done, calls in exported), exported
    assert cluster.otlp.token_usage(model) == {"input": (10, 300.0), "output": (10, 20.0)}
    rows = eval_rows(pg_store, remote.run_id)
    # as tests/evals/test_eval_postgres.py finds locally: the items whose answer is 12 pass, every call is priced
    assert sorted(r.task_id for r in rows if r.passed) == ["model-arith/avg", "model-arith/pct"]
    assert all(r.error_kind is None and r.cost_usd and r.cost_usd > 0 for r in rows)
    with pg_store.session() as s:
        from sqlmodel import select

        from loopmeter.store import Usage

        usage = list(s.exec(select(Usage).where(Usage.run_id == remote.run_id)))
    assert len(usage) == 10  # each worker stored its call's usage row in the shared store


def _audit_hashes(store: Any, run_id: str) -> set[str | None]:
    from sqlmodel import select

    from loopmeter.store import Audit

    with store.session() as s:
        return {a.policy_sha256 for a in s.exec(select(Audit).where(Audit.run_id == run_id))}


def test_a_policy_file_travels_by_content_to_the_cells_of_an_eval(ray_executor: Any, pg_store: Any, store: Any,
                                                                 tmp_path: Path) -> None:
    """`--policy FILE` is read once on the driver; the nodes get its text. The file is gone before the
    first cell is submitted, so a node that opened the path would fail the cell."""
    import hashlib

    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.executors.base import child_runs
    from tests.agents.conftest import policy_with

    (tmp_path / "driver").mkdir()
    policy = policy_with(tmp_path / "driver", "")  # the default preset's rules, named test-policy
    sha = hashlib.sha256(policy.read_bytes()).hexdigest()
    suite = slow_suite(tmp_path / "suite", 1, 0)
    options = EvalOptions(concurrency=1, policy=str(policy))
    local = start_eval(suite, ["oracle"], options, store=store)

    def remove_the_file(event: dict[str, Any]) -> None:
        if event["event"] == "start":  # after the driver read it, before any cell is submitted
            policy.unlink()

    remote = start_eval(suite, ["oracle"], options, store=pg_store, executor=ray_executor, on_event=remove_the_file)
    assert not policy.exists()
    (row,) = eval_rows(pg_store, remote.run_id)
    assert row.passed and row.error_kind is None, row.detail
    # the node ran it under the same policy as the local run: its child run and its audit log name the same hash
    (here,), (there,) = child_runs(store, local.run_id), child_runs(pg_store, remote.run_id)
    assert (there.policy, there.policy_sha256) == (here.policy, here.policy_sha256) == ("test-policy", sha)
    assert _audit_hashes(pg_store, there.id) == _audit_hashes(store, here.id) == {sha}


# -- attempts of `loopmeter run` ------------------------------------------------------------------

FIX_ADD = Path(__file__).resolve().parents[1] / "fixtures" / "agents" / "tasks" / "fix-add"


def test_loopmeter_run_attempts_on_the_cluster_match_local_and_their_branch_applies(
        cluster: RayTestCluster, pg_store: Any, tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess

    from sqlmodel import select

    from loopmeter.agents.worktree import repo_from_dir
    from loopmeter.store import Attempt, Audit, Iteration, Span
    from tests.conftest import loopmeter_cmd

    task = tmp_path / "fix-add"
    shutil.copytree(FIX_ADD, task)
    repos = {where: repo_from_dir(task / "repo", tmp_path / f"repo-{where}") for where in ("local", "ray")}
    url = pg_store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    env = {"local": {**os.environ, "LOOPMETER_HOME": str(tmp_path / "home-local")},
           "ray": {**os.environ, "LOOPMETER_HOME": str(tmp_path / "home-ray"), "LOOPMETER_DB_URL": url}}
    args = ["run", "--task", str(task), "--agent", "oracle", "--agent", "nop", "--max-iters", "1", "--json"]
    objs, took = {}, {}
    for where, extra in (("local", []), ("ray", ["--executor", "ray", "--ray-address", cluster.address])):
        started = time.monotonic()
        out = subprocess.run(loopmeter_cmd(*args, "--repo", str(repos[where]), *extra), env=env[where],
                             capture_output=True, text=True, timeout=300)
        took[where] = time.monotonic() - started
        assert out.returncode == 0, out.stderr
        objs[where] = json.loads(out.stdout)
    print(f"\nloopmeter run oracle+nop: local {took['local']:.1f}s, ray (2 nodes) {took['ray']:.1f}s")

    def statuses(obj: dict[str, Any]) -> dict[str, tuple[str, int]]:
        return {a["agent"]: (a["status"], a["iterations"]) for a in obj["attempts"]}

    assert statuses(objs["ray"]) == statuses(objs["local"]) == {"oracle": ("passed", 1), "nop": ("failed", 1)}
    run_id = objs["ray"]["id"]
    assert objs["ray"]["winner"] == next(a["id"] for a in objs["ray"]["attempts"] if a["agent"] == "oracle")
    # the attempts ran on the sandbox nodes (their spans went to the nodes' OTLP endpoint), each in a
    # private repository there that is removed once its branch is back; no worktree on this machine
    spans = cluster.otlp.traces()
    assert all(a["id"].encode() in spans for a in objs["ray"]["attempts"])
    assert list((cluster.node_home / "remote" / run_id).iterdir()) == []
    assert not (tmp_path / "home-ray" / "worktrees" / run_id).exists()

    with pg_store.session() as s:
        rows = {a.agent: a for a in s.exec(select(Attempt).where(Attempt.run_id == run_id))}
        iterations = list(s.exec(select(Iteration).where(Iteration.attempt_id.in_([a.id for a in rows.values()]))))  # type: ignore[attr-defined]
        stored = [sp.name for sp in s.exec(select(Span).where(Span.run_id == run_id))]
        audited = list(s.exec(select(Audit).where(Audit.run_id == run_id)))
    # the workers wrote the attempts' iterations, spans and sandbox audit to the shared store
    assert sorted((i.check_passed, i.n) for i in iterations) == [(False, 1), (True, 1)]
    assert stored.count("invoke_agent oracle") == 1 and stored.count("invoke_agent nop") == 1
    assert audited
    repo = repos["ray"]

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    oracle, nop = rows["oracle"], rows["nop"]
    # the attempt's branch is in the starting repository, at the attempt's commit
    assert git("rev-parse", f"refs/heads/{oracle.branch}") == oracle.head_commit != oracle.base_commit
    assert "a + b" in git("show", f"{oracle.head_commit}:calc.py")
    assert git("rev-parse", f"refs/heads/{nop.branch}") == nop.base_commit  # nop committed nothing
    assert json.loads(oracle.diffstat) == {"files": 1, "insertions": 1, "deletions": 1}
    assert git("for-each-ref", "--format=%(refname)", "refs/loopmeter") == ""  # the base bundle's ref is gone

    shown = subprocess.run(loopmeter_cmd("runs", "show", run_id, "--json"), env=env["ray"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    applied = subprocess.run(loopmeter_cmd("apply", run_id), env=env["ray"], capture_output=True, text=True,
                             timeout=60)
    assert applied.returncode == 0, applied.stderr
    assert "a + b" in (repo / "calc.py").read_text()
    assert f"Loopmeter-Attempt: {oracle.id}" in git("log", "-1", "--format=%B")


def test_ctrl_c_on_a_ray_run_cancels_its_attempt_and_resume_on_ray_finishes_it(
        cluster: RayTestCluster, pg_store: Any, tmp_path: Path) -> None:
    import json
    import subprocess

    from sqlmodel import select

    from loopmeter.agents.worktree import repo_from_dir
    from loopmeter.store import Attempt, Iteration, Run
    from tests.conftest import loopmeter_cmd

    task = slow_suite(tmp_path / "suite", 1, 29.7) / "slow-0"  # a sleep no other test starts
    repo = repo_from_dir(task / "repo", tmp_path / "repo")
    url = pg_store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    env = {**os.environ, "LOOPMETER_HOME": str(tmp_path / "home"), "LOOPMETER_DB_URL": url}
    ray_args = ["--executor", "ray", "--ray-address", cluster.address, "--json"]

    def sleepers() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes() == b"sleep\x0029.7\x00":
                    found.append(int(entry))
        return found

    proc = subprocess.Popen(loopmeter_cmd("run", "--task", str(task), "--repo", str(repo), "--agent", "oracle",
                                          "--max-iters", "1", *ray_args), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def acting() -> str | None:  # the worker started the attempt's first act: the oracle sleeps in it
            with pg_store.session() as s:
                its = list(s.exec(select(Iteration)))
            return its[0].attempt_id if its and sleepers() else None

        attempt_id = _wait_for(acting, 120, "the attempt acting on a node")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - started < 25, err  # not the 30 s the oracle sleeps
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err

    # the oracle's sleep ran in a sandbox on a node: it does not outlive the cancelled attempt
    _wait_for(lambda: not sleepers() or None, 20, "the sandboxed sleep to end")
    attempt = pg_store.get(Attempt, attempt_id)
    assert attempt.status == "cancelled" and pg_store.get(Run, attempt.run_id).status == "cancelled"

    (task / "solution" / "solve.sh").write_text("echo done > done.txt\n")
    out = subprocess.run(loopmeter_cmd("resume", attempt.run_id, *ray_args), env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (resumed,) = json.loads(out.stdout)["attempts"]
    assert (resumed["status"], resumed["iterations"]) == ("passed", 1)
    head = pg_store.get(Attempt, attempt_id).head_commit
    got = subprocess.run(["git", "show", f"refs/heads/{attempt.branch}:done.txt"], cwd=repo, capture_output=True,
                         text=True)
    assert got.stdout == "done\n" and head


def test_a_policy_ask_on_a_node_waits_and_approve_on_ray_continues_it(cluster: RayTestCluster, pg_store: Any,
                                                                     tmp_path: Path) -> None:
    import shutil
    import subprocess

    from loopmeter.agents.loop import AgentSpec, RunRequest, answer_approvals, start_run
    from loopmeter.agents.worktree import repo_from_dir
    from loopmeter.tasks import load_task
    from tests.agents.conftest import policy_with

    shutil.copytree(FIX_ADD, tmp_path / "fix-add")
    task = load_task(tmp_path / "fix-add")
    repo = repo_from_dir(task.path / "repo", tmp_path / "repo")
    policy = policy_with(tmp_path, '  - id: ask-oracle\n    action: agent\n    match: "oracle"\n'
                                   '    decision: ask\n    reason: oracle needs a yes\n')
    waiting = start_run(RunRequest(
        instruction=task.instruction, check=task.check, repo=repo, task=task, agents=[AgentSpec("oracle")],
        policy=policy, executor="ray", ray_address=cluster.address), store=pg_store)
    # the question was asked on a node; this machine reads it from the shared checkpoint
    assert waiting.status == "waiting" and [q["rule_id"] for q in waiting.approvals] == ["rules.ask-oracle"]
    import json

    from loopmeter.store import Run

    def node_of(run_id: str) -> str:
        (node,) = json.loads(pg_store.get(Run, run_id).config)["attempt_nodes"].values()
        return str(node)

    asked_on = node_of(waiting.run_id)
    assert asked_on in {w.node_id for w in cluster.workers}  # a sandbox node, not the head
    events: list[dict[str, Any]] = []
    done = answer_approvals(waiting.run_id, True, store=pg_store, executor="ray", ray_address=cluster.address,
                            on_event=events.append)
    assert done.status == "passed" and done.attempts[0].status == "passed"
    # the live display gets the attempt's end, read from what its worker stored
    assert [(e["state"], e["status"], e["iteration"]) for e in events if e["state"] == "done"] == [("done", "passed", 1)]
    assert node_of(done.run_id) == asked_on  # the answered attempt continued where its worktree is
    shown = subprocess.run(["git", "show", f"refs/heads/{done.attempts[0].branch}:calc.py"], cwd=repo,
                           capture_output=True, text=True)
    assert "a + b" in shown.stdout


def test_a_ray_runs_policy_file_travels_by_content_to_its_attempt(cluster: RayTestCluster, pg_store: Any,
                                                                 tmp_path: Path) -> None:
    """The attempt asks (a policy `ask`) on a node; the answer removes the policy file from the driver
    before the attempt continues on a node, which therefore uses the text the driver sent."""
    import hashlib
    import shutil

    from loopmeter.agents.loop import AgentSpec, RunRequest, start_run
    from loopmeter.agents.worktree import repo_from_dir
    from loopmeter.store import Run
    from loopmeter.tasks import load_task
    from tests.agents.conftest import policy_with

    shutil.copytree(FIX_ADD, tmp_path / "fix-add")
    task = load_task(tmp_path / "fix-add")
    repo = repo_from_dir(task.path / "repo", tmp_path / "repo")
    policy = policy_with(tmp_path, '  - id: ask-oracle\n    action: agent\n    match: "oracle"\n'
                                   '    decision: ask\n    reason: oracle needs a yes\n')
    sha = hashlib.sha256(policy.read_bytes()).hexdigest()
    asked: list[str] = []

    def approve_and_remove_the_file(questions: list[dict[str, Any]]) -> dict[str, bool]:
        asked.extend(q["rule_id"] for q in questions)
        policy.unlink()
        return {q["id"]: True for q in questions}

    done = start_run(RunRequest(
        instruction=task.instruction, check=task.check, repo=repo, task=task, agents=[AgentSpec("oracle")],
        policy=policy, executor="ray", ray_address=cluster.address, approver=approve_and_remove_the_file),
        store=pg_store)
    assert asked == ["rules.ask-oracle"] and not policy.exists()
    assert done.status == "passed" and done.attempts[0].status == "passed", done.attempts[0].stop_reason
    assert pg_store.get(Run, done.run_id).policy_sha256 == sha
    hashes = _audit_hashes(pg_store, done.run_id)  # the node's sandbox decisions and this machine's ask/approve
    assert hashes == {sha}


def test_a_ray_run_with_a_sqlite_store_on_several_nodes_is_refused_before_it_starts(
        cluster: RayTestCluster, store: Any, tmp_path: Path) -> None:
    from loopmeter.agents.loop import AgentSpec, RunRequest, start_run
    from loopmeter.agents.worktree import repo_from_dir
    from loopmeter.store import Run

    repo = repo_from_dir(FIX_ADD / "repo", tmp_path / "repo")
    with pytest.raises(LoopmeterError) as info:
        start_run(RunRequest(instruction="fix add", check="true", repo=repo, agents=[AgentSpec("nop")],
                             executor="ray", ray_address=cluster.address), store=store)
    assert "SQLite" in info.value.message and "3 nodes" in info.value.message
    assert store.count(Run) == 0 and not ray.is_initialized()
