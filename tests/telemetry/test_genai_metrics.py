"""loopmeter's own model calls emit the OpenTelemetry GenAI metrics: the builtin agent and model
tasks through litellm, against the scripted OpenAI server on loopback; and over OTLP, as
configured by OTEL_EXPORTER_OTLP_ENDPOINT, into a real `loopmeter collect`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from loopmeter.agents.base import StepContext
from loopmeter.agents.builtin import BuiltinBackend
from loopmeter.evals.model_tasks import load_dataset, run_item
from loopmeter.evals.suite import load_suite
from loopmeter.telemetry.otel import DURATION_BUCKETS, TOKEN_BUCKETS, setup
from tests.conftest import free_port, loopmeter_cmd
from tests.servers.openai_server import OpenAIServer, Reply, text, tool_call
from tests.telemetry.test_receiver_cli import _wait_listening

PRICED = "openai/gpt-4o-mini"


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    """Metric name -> its data points, from one collection."""
    data = reader.get_metrics_data()
    return {m.name: list(m.data.data_points) for rm in data.resource_metrics
            for sm in rm.scope_metrics for m in sm.metrics}


def step_context(workdir: Path, model: str, api_base: str, state_dir: Path | None = None) -> StepContext:
    return StepContext(run_id="01RUN", attempt_id="01RUN-a", agent="builtin", model=model, workdir=workdir,
                       instruction="Read notes.txt and say what it says.", iteration=1, api_base=api_base,
                       state_dir=state_dir)


def test_a_builtin_step_records_tokens_duration_and_cost_per_model_call(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    reader = InMemoryMetricReader()
    telemetry = setup(metric_readers=[reader], otlp_endpoint="")
    backend = BuiltinBackend(telemetry=telemetry)
    with OpenAIServer() as server:
        server.script(tool_call("read_file", {"path": "notes.txt"}, prompt_tokens=120, completion_tokens=9,
                                cached_tokens=100),
                      text("It says hello.", prompt_tokens=200, completion_tokens=5))
        result = backend.step(step_context(tmp_path, PRICED, server.base_url, state_dir=tmp_path / "state"))
        # the same step again replays its journal: no model call, so no new points
        again = backend.step(step_context(tmp_path, PRICED, server.base_url, state_dir=tmp_path / "state"))
        assert len(server.requests) == 2
    assert result.error is None and result.summary == "It says hello."
    assert [r.key for r in again.usage] == [r.key for r in result.usage]
    got = points(reader)
    assert set(got) == {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "loopmeter.cost"}

    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": PRICED}
    tokens = {p.attributes["gen_ai.token.type"]: p for p in got["gen_ai.client.token.usage"]}
    assert {k: dict(p.attributes) for k, p in tokens.items()} == {
        "input": {**base, "gen_ai.token.type": "input"}, "output": {**base, "gen_ai.token.type": "output"}}
    # input counts cached tokens too, as the conventions ask: what the server reported as prompt tokens
    assert (tokens["input"].count, tokens["input"].sum) == (2, 120 + 200)
    assert (tokens["output"].count, tokens["output"].sum) == (2, 9 + 5)
    assert tuple(tokens["input"].explicit_bounds) == TOKEN_BUCKETS

    (duration,) = got["gen_ai.client.operation.duration"]
    assert dict(duration.attributes) == base and duration.count == 2
    assert duration.sum == pytest.approx(sum(r.latency_ms for r in result.usage) / 1000)
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS

    (cost,) = got["loopmeter.cost"]
    assert dict(cost.attributes) == {**base, "loopmeter.cost_source": "calculated"}
    assert cost.value == pytest.approx(sum(r.cost_usd for r in result.usage)) and cost.value > 0
    telemetry.shutdown()


def test_a_failed_model_call_records_its_duration_with_the_error_type(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    telemetry = setup(metric_readers=[reader], otlp_endpoint="")
    with OpenAIServer() as server:
        server.script(Reply(status=401, error="bad key"))
        result = BuiltinBackend(telemetry=telemetry).step(step_context(tmp_path, "openai/m", server.base_url))
    assert result.error_kind == "auth"
    got = points(reader)
    assert set(got) == {"gen_ai.client.operation.duration"}  # no tokens, no cost: nothing was used
    (duration,) = got["gen_ai.client.operation.duration"]
    assert dict(duration.attributes) == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                         "gen_ai.request.model": "openai/m", "error.type": "AuthenticationError"}
    assert duration.count == 1 and duration.sum > 0
    telemetry.shutdown()


def test_a_model_task_records_the_metrics_and_an_unpriced_model_no_cost() -> None:
    task = load_suite("model-arith").tasks[0]
    item = load_dataset(task)[0]
    reader = InMemoryMetricReader()
    telemetry = setup(metric_readers=[reader], otlp_endpoint="")
    with OpenAIServer() as server:
        server.script(text(str(item.target), prompt_tokens=40, completion_tokens=3))
        result = run_item(task, item, "openai/local-small", run_id="01EVAL", attempt_id="01EVAL-a",
                          api_base=server.base_url, telemetry=telemetry)
    assert result.passed and result.usage is not None and result.usage.cost_usd is None
    got = points(reader)
    assert set(got) == {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"}
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "openai/local-small"}
    assert {p.attributes["gen_ai.token.type"]: (dict(p.attributes), p.sum)
            for p in got["gen_ai.client.token.usage"]} == {
        "input": ({**base, "gen_ai.token.type": "input"}, 40),
        "output": ({**base, "gen_ai.token.type": "output"}, 3)}
    (duration,) = got["gen_ai.client.operation.duration"]
    assert dict(duration.attributes) == base
    assert duration.sum == pytest.approx(result.usage.latency_ms / 1000)
    telemetry.shutdown()


def test_an_eval_exports_its_metrics_over_otlp_to_loopmeter_collect(tmp_path: Path) -> None:
    """`collect` counts metric points per name and stores none (docs/deployment.md): the counts show
    the export arrived and was accepted."""
    port = free_port()
    collector = subprocess.Popen(loopmeter_cmd("collect", "--port", str(port), "--json"),
                                 env={**os.environ, "LOOPMETER_HOME": str(tmp_path / "collector")},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, collector)
        items = load_dataset(load_suite("model-arith").tasks[0])
        with OpenAIServer() as server:
            server.script(*(text(str(item.target), prompt_tokens=40, completion_tokens=3) for item in items))
            env = {**os.environ, "LOOPMETER_HOME": str(tmp_path / "home"),
                   "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                   "OTEL_METRIC_EXPORT_INTERVAL": "600000"}  # so only the export at exit happens
            ran = subprocess.run(loopmeter_cmd("eval", "run", "model-arith", "--agent", PRICED, "--api-base",
                                               server.base_url, "--concurrency", "1", "--json"),
                                 env=env, capture_output=True, text=True, timeout=300)
            assert ran.returncode == 0, ran.stderr
            assert len(server.served()) == len(items)
        collector.send_signal(signal.SIGTERM)
        out, err = collector.communicate(timeout=60)
    finally:
        if collector.poll() is None:
            collector.kill()
    assert collector.returncode == 0, err
    stats = json.loads(out)
    assert stats["bad_requests"] == 0 and stats["overloaded"] == 0
    # one model: an input and an output point, one duration point, one cost point
    assert {name: n for name, n in stats["events"].items() if name.startswith(("gen_ai.", "loopmeter."))} == {
        "gen_ai.client.token.usage": 2, "gen_ai.client.operation.duration": 1, "loopmeter.cost": 1}
