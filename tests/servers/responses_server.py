"""A scripted OpenAI Responses API server on 127.0.0.1, for driving Codex offline.

Codex speaks only the Responses API to a custom provider: POST /v1/responses with
`"stream": true`, answered with server-sent events. Each scripted turn is a text
message or a function call (Codex's shell tool is `exec_command`); every reply
reports usage in `response.completed`, and `server.replies` records it.

    with ResponsesServer([shell_turn("echo hi > hello.txt"), message_turn("done")]) as srv:
        base_url = srv.url + "/v1"
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.servers._http import QuietHandler, ScriptedServer, sse_event

DEFAULT_USAGE = {"input_tokens": 1000, "cached_tokens": 0, "output_tokens": 50, "reasoning_tokens": 0}


@dataclass
class RTurn:
    """One scripted response: output items plus the usage to report.

    `input_tokens` follows the API: it includes `cached_tokens`."""

    items: list[dict[str, Any]]
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    fail: str | None = None  # send response.failed with this message instead
    http_status: int | None = None  # answer with this HTTP error status and an error body instead


def _usage(**kw: int) -> dict[str, int]:
    usage = dict(DEFAULT_USAGE)
    usage.update(kw)
    return usage


def message_turn(text: str, **usage: int) -> RTurn:
    return RTurn([{"type": "message", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}], _usage(**usage))


def function_turn(name: str, arguments: dict[str, Any], **usage: int) -> RTurn:
    return RTurn([{"type": "function_call", "status": "completed", "name": name,
                   "arguments": json.dumps(arguments), "call_id": "call_" + uuid.uuid4().hex[:20]}],
                 _usage(**usage))


def shell_turn(command: str, **usage: int) -> RTurn:
    """Codex's `exec_command` tool: `cmd` is a shell command string."""
    return function_turn("exec_command", {"cmd": command}, **usage)


def failed_turn(message: str = "scripted failure") -> RTurn:
    """A stream that ends in response.failed (Codex retries these)."""
    return RTurn([], _usage(), fail=message)


def http_error_turn(status: int = 401, message: str = "Incorrect API key provided") -> RTurn:
    """An HTTP error reply, e.g. 401 for a bad key (Codex does not retry it)."""
    return RTurn([], _usage(), fail=message, http_status=status)


@dataclass
class RReply:
    response_id: str
    request_id: str
    model: str
    usage: dict[str, int]
    failed: bool


class ResponsesServer(ScriptedServer):
    thread_name = "responses-server"

    def __init__(self, turns: Iterable[RTurn] = (), *, host: str = "127.0.0.1", port: int = 0,
                 done_text: str = "done", exhausted: RTurn | None = None) -> None:
        super().__init__(host, port)
        self._turns: deque[RTurn] = deque(turns)
        self.exhausted = exhausted  # the reply once the script has run out (default: a "done" message)
        self._ids = itertools.count(1)
        self.done_text = done_text
        self.replies: list[RReply] = []

    def add(self, *turns: RTurn) -> None:
        with self._lock:
            self._turns.extend(turns)

    def usage_total(self) -> dict[str, int]:
        out = {k: 0 for k in DEFAULT_USAGE}
        for r in self.replies:
            if not r.failed:
                for k, v in r.usage.items():
                    out[k] += v
        return out

    def answer(self, body: dict[str, Any]) -> tuple[RReply, RTurn]:
        with self._lock:
            if self._turns:
                turn = self._turns.popleft()
            else:
                turn = self.exhausted or message_turn(self.done_text)
        n = next(self._ids)
        reply = RReply(response_id=f"resp_{n:04d}{uuid.uuid4().hex[:16]}",
                       request_id=f"req_{n:04d}{uuid.uuid4().hex[:16]}",
                       model=str(body.get("model") or "gpt-5-codex"), usage=dict(turn.usage),
                       failed=turn.fail is not None)
        with self._lock:
            self.replies.append(reply)
        return reply, turn

    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.record_request(self, {})
                path = urlsplit(self.path).path.rstrip("/")
                if path.endswith("/models"):
                    self.send_json(200, {"object": "list", "data": [], "models": []})
                else:
                    self.send(404, b'{"error":{"message":"not found"}}', "application/json")

            def do_POST(self) -> None:
                body = self.read_json()
                server.record_request(self, body)
                path = urlsplit(self.path).path.rstrip("/")
                if not path.endswith("/responses"):
                    self.send(404, b'{"error":{"message":"not found"}}', "application/json")
                    return
                reply, turn = server.answer(body)
                headers = {"x-request-id": reply.request_id}
                if turn.http_status:
                    err = {"error": {"message": turn.fail, "type": "invalid_request_error", "code": None}}
                    self.send_json(turn.http_status, err, headers)
                    return
                if body.get("stream"):
                    self.send_sse(_sse(reply, turn), headers)
                else:
                    self.send_json(200, _response(reply, turn, "completed"), headers)

        return Handler


def _usage_obj(u: dict[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": u["input_tokens"],
        "input_tokens_details": {"cached_tokens": u["cached_tokens"]},
        "output_tokens": u["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]},
        "total_tokens": u["input_tokens"] + u["output_tokens"],
    }


def _items_with_ids(turn: RTurn) -> list[dict[str, Any]]:
    out = []
    for item in turn.items:
        prefix = "fc_" if item["type"] == "function_call" else "msg_"
        out.append({"id": prefix + uuid.uuid4().hex[:20], **item})
    return out


def _response(reply: RReply, turn: RTurn, status: str, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": reply.response_id, "object": "response", "created_at": 0, "status": status,
            "model": reply.model, "output": items if items is not None else _items_with_ids(turn),
            "usage": _usage_obj(reply.usage) if status == "completed" else None}


def _event(name: str, data: dict[str, Any]) -> str:
    return sse_event(name, {"type": name, **data})


def _sse(reply: RReply, turn: RTurn) -> str:
    seq = itertools.count()
    out = [_event("response.created", {"sequence_number": next(seq),
                                       "response": _response(reply, turn, "in_progress", [])})]
    if turn.fail is not None:
        failed = _response(reply, turn, "failed", [])
        failed["error"] = {"code": "server_error", "message": turn.fail}
        out.append(_event("response.failed", {"sequence_number": next(seq), "response": failed}))
        return "".join(out)
    items = _items_with_ids(turn)
    for i, item in enumerate(items):
        out.append(_event("response.output_item.added", {"sequence_number": next(seq), "output_index": i,
                                                         "item": {**item, "status": "in_progress"}}))
        if item["type"] == "message":
            text = item["content"][0]["text"]
            out.append(_event("response.output_text.delta", {"sequence_number": next(seq), "output_index": i,
                                                             "item_id": item["id"], "content_index": 0,
                                                             "delta": text}))
        out.append(_event("response.output_item.done", {"sequence_number": next(seq), "output_index": i,
                                                        "item": item}))
    out.append(_event("response.completed", {"sequence_number": next(seq),
                                             "response": _response(reply, turn, "completed", items)}))
    return "".join(out)
