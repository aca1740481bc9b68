"""Model tasks: a JSONL dataset of {input, target} scored against one model call per item.

Each line is one item (a cluster for the statistics): `input` (a string, or a list of
chat messages), `target`, and optionally `id`. The task's `instruction` becomes the
system message. Calls go through litellm, so any model litellm knows works; `api_base`
points it at an OpenAI-compatible server (tests use a scripted one on loopback).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.agents.model_errors import model_error_kind
from loopmeter.errors import ConfigError
from loopmeter.evals.scorers import get_scorer, score
from loopmeter.records import UsageRow, utcnow
from loopmeter.tasks import Task
from loopmeter.vocab import ErrorKind

if TYPE_CHECKING:
    from loopmeter.telemetry.otel import Telemetry


@dataclass
class Item:
    id: str
    input: Any
    target: Any


@dataclass
class ItemResult:
    passed: bool
    score: float
    output: str | None
    latency_ms: float | None
    usage: UsageRow | None = None
    error_kind: ErrorKind | None = None  # infra (connection, 5xx), auth, timeout, model
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_dataset(task: Task) -> list[Item]:
    """Items of a model task. A bad line names the file, line and field."""
    if task.dataset is None:
        raise ConfigError(f"task {task.id}: model tasks need `dataset` (a JSONL file)")
    if task.scorer:
        get_scorer(task.scorer)  # unknown scorer fails before any call is made
    path: Path = task.dataset
    if not path.is_file():
        raise ConfigError(f"{path}: dataset not found (task {task.id})")
    items: list[Item] = []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{n}: expected an object with 'input' and 'target'")
        for key in ("input", "target"):
            if key not in row:
                raise ConfigError(f"{path}:{n}: missing field '{key}'")
        item_id = str(row.get("id", n))
        if item_id in seen:
            raise ConfigError(f"{path}:{n}: duplicate id '{item_id}'")
        seen.add(item_id)
        items.append(Item(item_id, row["input"], row["target"]))
    return items


def messages_for(task: Task, item: Item) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if task.instruction.strip():
        messages.append({"role": "system", "content": task.instruction.strip()})
    if isinstance(item.input, list):
        messages.extend(item.input)
    else:
        messages.append({"role": "user", "content": str(item.input)})
    return messages


def _provider(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def call_model(model: str, messages: list[dict[str, Any]], *, api_base: str | None = None,
               timeout_s: float = 120.0, telemetry: Telemetry | None = None) -> tuple[Any, float]:
    """One chat completion through litellm; returns (response, latency_ms). A call that fails
    records its duration on `telemetry` (default: the process-wide one) before raising."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "timeout": timeout_s, "num_retries": 0}
    if api_base:
        kwargs["api_base"] = api_base
    from loopmeter.secrets import PROVIDERS, get_key

    provider = _provider(model)
    key = get_key(provider)[0] if provider in PROVIDERS else None
    if key:
        kwargs["api_key"] = key
    elif api_base:
        kwargs["api_key"] = "sk-none"  # local OpenAI-compatible servers accept any key
    started = time.monotonic()
    try:
        resp = litellm.completion(**kwargs)
    except Exception as exc:
        from loopmeter.telemetry.otel import get_telemetry

        (telemetry or get_telemetry()).record_failed_call(
            provider=provider, model=model, duration_s=time.monotonic() - started, error_type=type(exc).__name__)
        raise
    return resp, (time.monotonic() - started) * 1000


def usage_row(resp: Any, model: str, key: str, latency_ms: float, run_id: str, attempt_id: str) -> UsageRow:
    from loopmeter.telemetry import tokens
    from loopmeter.telemetry.costs import price_row
    from loopmeter.telemetry.pricing import default_price_table

    counts = tokens.or_unknown(tokens.litellm_usage, getattr(resp, "usage", None))
    return price_row(UsageRow(
        key=key, source="loop", ts=utcnow(), model=model, agent="model-eval", provider=_provider(model),
        session_id=attempt_id, **counts._asdict(), latency_ms=round(latency_ms, 2),
        request_id=getattr(resp, "id", None), run_id=run_id, attempt_id=attempt_id,
    ), default_price_table())


def run_item(task: Task, item: Item, model: str, *, run_id: str, attempt_id: str,
             api_base: str | None = None, telemetry: Telemetry | None = None) -> ItemResult:
    """Ask `model` one item and score the answer. Failures to get an answer are error kinds, not crashes.
    The call's GenAI metrics go to `telemetry` (default: the process-wide one)."""
    from loopmeter.telemetry.otel import get_telemetry

    telemetry = telemetry or get_telemetry()
    try:
        resp, latency_ms = call_model(model, messages_for(task, item), api_base=api_base,
                                      timeout_s=min(task.time_limit_s, 600.0), telemetry=telemetry)
    except Exception as exc:  # litellm maps every provider failure to its own exception types
        return ItemResult(False, 0.0, None, None, error_kind=model_error_kind(exc),
                          detail=f"{type(exc).__name__}: {str(exc)[:300]}")
    row = usage_row(resp, model, f"loop:{attempt_id}:1:1", latency_ms, run_id, attempt_id)
    telemetry.record_usage(row)
    output = resp.choices[0].message.content or ""
    result = score(task.scorer or "exact", output, item.target, task.scorer_args)
    return ItemResult(result.passed, result.value, output, latency_ms, usage=row)
