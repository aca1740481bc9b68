"""The scripted model servers the CLI backend tests (and the OTLP receiver tests) drive agents with."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.servers.anthropic_server import AnthropicServer, error_turn, text_turn, write_turn
from tests.servers.responses_server import ResponsesServer, http_error_turn, message_turn, shell_turn

TOOLS = [{"name": "Write", "input_schema": {"type": "object"}}]


def post(url: str, body: dict) -> tuple[int, dict, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        name = lines[0].removeprefix("event: ")
        out.append((name, json.loads(lines[1].removeprefix("data: "))))
    return out


def test_anthropic_stream_has_the_messages_api_event_sequence_and_usage():
    turn = write_turn("/w/a.txt", "hi\n", input_tokens=11, output_tokens=7, cache_read_input_tokens=5,
                      cache_creation_input_tokens=3)
    with AnthropicServer([turn]) as srv:
        status, headers, body = post(srv.url + "/v1/messages?beta=true",
                                     {"model": "claude-x", "stream": True, "tools": TOOLS, "messages": []})
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = sse_events(body)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == 11 and start["usage"]["cache_read_input_tokens"] == 5
    block = next(d for n, d in events if n == "content_block_start")["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "Write"
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert json.loads(partial) == {"file_path": "/w/a.txt", "content": "hi\n"}
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 7
    assert headers["request-id"] == srv.replies[0].request_id and srv.replies[0].scripted
    assert srv.requests[0]["query"] == "beta=true"


def test_anthropic_side_requests_do_not_consume_scripted_turns():
    with AnthropicServer([text_turn("main answer")]) as srv:
        status, _, body = post(srv.url + "/v1/messages", {"model": "claude-haiku", "messages": [],
                                                           "system": "Generate a title for this session"})
        assert status == 200 and json.loads(json.loads(body)["content"][0]["text"])["title"]
        assert post(srv.url + "/v1/messages/count_tokens", {"messages": []})[0] == 200
        status, _, body = post(srv.url + "/v1/messages", {"model": "claude-x", "tools": TOOLS, "messages": []})
        assert json.loads(body)["content"][0]["text"] == "main answer"  # non-streaming JSON
        _, _, body = post(srv.url + "/v1/messages", {"model": "claude-x", "tools": TOOLS, "messages": []})
        assert json.loads(body)["content"][0]["text"] == "done"  # script ran out
    assert [r.scripted for r in srv.replies] == [False, True, True]
    assert set(srv.usage_by_model()) == {"claude-haiku", "claude-x"}


def test_anthropic_error_turn_is_an_api_error_with_a_request_id():
    with AnthropicServer([error_turn(529, "overloaded_error", "Overloaded")]) as srv:
        status, headers, body = post(srv.url + "/v1/messages", {"model": "m", "tools": TOOLS, "messages": []})
    assert status == 529 and json.loads(body)["error"]["type"] == "overloaded_error" and headers["request-id"]
    assert srv.usage_by_model() == {}


def test_responses_stream_reports_function_calls_and_usage():
    with ResponsesServer([shell_turn("ls", input_tokens=100, cached_tokens=40, output_tokens=9, reasoning_tokens=4),
                          message_turn("ok")], exhausted=http_error_turn(401)) as srv:
        status, _, body = post(srv.url + "/v1/responses", {"model": "gpt-x", "stream": True})
        events = sse_events(body)
        assert [n for n, _ in events][0] == "response.created" and events[-1][0] == "response.completed"
        item = next(d["item"] for n, d in events if n == "response.output_item.done")
        assert item["type"] == "function_call" and item["name"] == "exec_command"
        assert json.loads(item["arguments"]) == {"cmd": "ls"}
        usage = events[-1][1]["response"]["usage"]
        assert usage["input_tokens_details"]["cached_tokens"] == 40
        assert usage["output_tokens_details"]["reasoning_tokens"] == 4
        assert post(srv.url + "/v1/responses", {"model": "gpt-x", "stream": True})[0] == 200
        assert post(srv.url + "/v1/responses", {"model": "gpt-x", "stream": True})[0] == 401
    assert srv.usage_total()["input_tokens"] == 100 + 1000
