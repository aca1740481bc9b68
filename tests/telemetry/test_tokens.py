"""One token normalisation per vendor (telemetry/tokens.py): the same call read from an agent's
JSON output, its log on disk and its OTLP export is stored with the same counts, and counts that
contradict each other are treated alike (a log line counted as malformed, an OTLP record
rejected, an agent's call kept with unknown counts: unpriced)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from loopmeter.agents import claude_code as claude_agent
from loopmeter.agents import codex as codex_agent
from loopmeter.agents import gemini as gemini_agent
from loopmeter.agents.base import StepContext
from loopmeter.telemetry import tokens
from loopmeter.telemetry.ingest import claude_code as claude_log
from loopmeter.telemetry.ingest import codex as codex_log
from loopmeter.telemetry.ingest import gemini as gemini_log
from loopmeter.telemetry.ingest.base import FileContext
from loopmeter.telemetry.ingest.otlp import decode
from loopmeter.vocab import CostSource
from tests.fixtures.otlp import payloads as p

TS = "2026-11-09T10:00:01.123Z"


def _ctx(agent: str) -> StepContext:
    return StepContext(run_id="r", attempt_id="a", agent=agent, model=None, workdir=Path("."), instruction="",
                       iteration=1)


def _counts(row) -> tuple:
    """The stored counts; a count a face does not report at all (cache writes, reasoning) as 0."""
    return (row.input_tokens, row.cache_read_tokens, row.cache_write_tokens or 0, row.output_tokens,
            row.reasoning_tokens or 0)


def _log_rows(module, lines: list[dict], tmp_path: Path) -> tuple[list, int]:
    ctx = FileContext(path=tmp_path / "x.jsonl", source=module.SOURCE_TAG, agent=module.SOURCE.agent,
                      provider=module.SOURCE.provider)
    rows = list(module.parse([json.dumps(line).encode() for line in lines], ctx))
    return rows, ctx.malformed


def _otlp_rows(record) -> tuple[list, int]:
    out = decode("logs", p.otlp_json(p.logs_request([record])), "application/json")
    return out.usage, out.rejected


# -- each vendor's faces -----------------------------------------------------------

def _codex_faces(tmp_path: Path, inp: int, cached: int, out: int, reasoning: int) -> dict[str, tuple[list, int]]:
    usage = {"input_tokens": inp, "cached_input_tokens": cached, "output_tokens": out,
             "reasoning_output_tokens": reasoning, "total_tokens": inp + out}
    agent = codex_agent.usage_row(_ctx("codex"), 1, usage, "gpt-5-codex", "s1")
    log = _log_rows(codex_log, [
        {"timestamp": TS, "type": "session_meta", "payload": {"id": "0199f0c2-1111-2222-3333-444455556666", "cwd": "/w"}},
        {"timestamp": TS, "type": "turn_context", "payload": {"model": "gpt-5-codex"}},
        {"timestamp": TS, "type": "event_msg",
         "payload": {"type": "token_count", "info": {"total_token_usage": usage, "last_token_usage": usage}}},
    ], tmp_path)
    return {"agent": ([agent], 0), "log": log,
            "otlp": _otlp_rows(p.codex_completed(input_tokens=inp, cached=cached, output_tokens=out, reasoning=reasoning))}


def _gemini_faces(tmp_path: Path, prompt: int, cached: int, out: int, thoughts: int, tool: int) -> dict:
    stats = {"models": {"gemini-2.5-pro": {"api": {"totalRequests": 1, "totalLatencyMs": 1800}, "tokens": {
        "prompt": prompt, "candidates": out, "cached": cached, "thoughts": thoughts, "tool": tool,
        "total": prompt + out + thoughts + tool}}}}
    agent = gemini_agent.parse_output({"session_id": "g1", "response": "ok", "stats": stats}, None, _ctx("gemini"))
    log = _log_rows(gemini_log, [{"sessionId": "g1", "projectHash": "h", "messages": [
        {"type": "gemini", "id": "m1", "timestamp": TS, "model": "gemini-2.5-pro",
         "tokens": {"input": prompt, "output": out, "cached": cached, "thoughts": thoughts, "tool": tool,
                    "total": prompt + out + thoughts + tool}}]}], tmp_path)
    otlp = _otlp_rows(p.gemini_api_response(input_tokens=prompt, output_tokens=out, cached=cached, thoughts=thoughts,
                                            tool=tool))
    return {"agent": (agent.usage, 0), "log": log, "otlp": otlp}


def _claude_faces(tmp_path: Path, inp: int, read: int, write: int, out: int) -> dict:
    usage = {"input_tokens": inp, "cache_read_input_tokens": read, "cache_creation_input_tokens": write,
             "output_tokens": out}
    message = {"id": "msg_1", "model": "claude-sonnet-4-5", "usage": usage}
    agent = claude_agent._message_row(message, "req_1", "s1", None, _ctx("claude-code"), set())
    log = _log_rows(claude_log, [{"timestamp": TS, "sessionId": "s1", "requestId": "req_1", "cwd": "/w",
                                  "message": message}], tmp_path)
    otlp = _otlp_rows(p.claude_api_request("req_1", input_tokens=inp, output_tokens=out, cache_read_tokens=read,
                                           cache_creation_tokens=write))
    return {"agent": ([agent], 0), "log": log, "otlp": otlp}


@pytest.mark.parametrize(("faces", "args", "expected"), [
    # OpenAI counts the cached tokens inside the input and the reasoning inside the output
    (_codex_faces, (3500, 750, 425, 275), (2750, 750, 0, 425, 275)),
    # Gemini counts the cached tokens inside the prompt, the tool-use prompt apart, the thoughts apart
    (_gemini_faces, (33779, 9513, 390, 2111, 120), (33779 - 9513 + 120, 9513, 0, 390 + 2111, 2111)),
    # Anthropic's input excludes the cache
    (_claude_faces, (100, 50, 10, 20), (100, 50, 10, 20, 0)),
], ids=["codex", "gemini", "claude-code"])
def test_the_same_call_is_stored_alike_from_agent_output_log_and_otlp(faces, args, expected, tmp_path):
    seen = faces(tmp_path, *args)
    for face, (rows, bad) in seen.items():
        assert bad == 0, face
        assert [_counts(r) for r in rows] == [expected], face


@pytest.mark.parametrize(("faces", "args"), [
    (_codex_faces, (10, 20, 5, 0)),  # 20 cached tokens of an input of 10
    (_gemini_faces, (10, 20, 5, 0, 0)),
], ids=["codex", "gemini"])
def test_counts_that_contradict_each_other_are_bad_input_everywhere(faces, args, tmp_path):
    seen = faces(tmp_path, *args)
    log_rows, malformed = seen["log"]
    assert log_rows == [] and malformed == 1  # counted and skipped, not clamped into a made-up call
    otlp_rows, rejected = seen["otlp"]
    assert otlp_rows == [] and rejected == 1
    (row,), _ = seen["agent"]  # the agent's call happened: kept, its counts unknown, so unpriced
    assert (row.input_tokens, row.cache_read_tokens, row.output_tokens) == (None, None, None)
    assert row.cost_usd is None and row.cost_source == CostSource.UNPRICED


def test_litellm_usage_takes_the_cached_and_cache_write_tokens_out_of_the_prompt():
    # litellm reports every provider in OpenAI's shape; for Anthropic its prompt_tokens include
    # cache_read_input_tokens and cache_creation_input_tokens
    usage = SimpleNamespace(prompt_tokens=1000, completion_tokens=50,
                            prompt_tokens_details=SimpleNamespace(cached_tokens=600), cache_creation_input_tokens=100,
                            completion_tokens_details=SimpleNamespace(reasoning_tokens=20))
    assert tokens.litellm_usage(usage) == tokens.Counts(300, 600, 100, None, 50, 20)
    assert tokens.litellm_usage(None) == tokens.Counts()  # no usage reported: nothing known, not zeros
    bad = SimpleNamespace(prompt_tokens=10, completion_tokens=1, prompt_tokens_details=SimpleNamespace(cached_tokens=60))
    with pytest.raises(tokens.TokenCountError):
        tokens.litellm_usage(bad)
    assert tokens.or_unknown(tokens.litellm_usage, bad) == tokens.Counts()


@pytest.mark.parametrize("bad", [10**30, -5, "lots", 1.5, True, float("nan"), [1], None])
def test_an_agents_hostile_token_count_is_no_count_and_never_reaches_the_store_as_one(bad):
    # agent output is written in the sandbox: a count the store could not hold, or that is not a
    # whole number of tokens, makes the call's counts unknown (unpriced), not an error or a made-up figure
    usage = {"input_tokens": bad, "cached_input_tokens": 0, "output_tokens": 7}
    row = codex_agent.usage_row(_ctx("codex"), 1, usage, "gpt-5-codex", "s1")
    assert row.input_tokens is None and row.output_tokens == 7
    message = {"id": "m", "model": "claude-sonnet-4-5", "usage": {"input_tokens": bad, "output_tokens": 7,
                                                                   "cache_creation": bad}}
    row = claude_agent._message_row(message, "req_x", "s1", None, _ctx("claude-code"), set())
    assert row.input_tokens is None and row.output_tokens == 7 and row.cache_write_1h_tokens is None
    watch = claude_agent.StreamWatch(max_tokens=100)
    assert watch("stdout", json.dumps({"type": "assistant", "message": message})) is None
    for hostile in ([1, 2], {"type": "assistant", "message": "text"}, {"type": "assistant", "message": {"usage": 5}}):
        assert watch("stdout", json.dumps(hostile) + ' "assistant"') is None
    assert claude_agent._message_row("not a message", None, None, None, _ctx("claude-code"), set()) is None
