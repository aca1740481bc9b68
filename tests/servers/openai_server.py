"""A scripted OpenAI chat-completions server on 127.0.0.1, for tests and demos.

    with OpenAIServer() as server:
        server.script(tool_call("write_file", {"path": "a.py", "content": "x = 1\\n"}, prompt_tokens=120))
        server.script(text("done", prompt_tokens=200, completion_tokens=5, cached_tokens=100))
        server.script(text("hi"), model="small-model")       # a per-model script
        ... point litellm at server.base_url (".../v1") with model "openai/<anything>" ...
        server.requests   # every request: {"path", "headers", "body", "model"}

Replies are taken in order from the model's own queue if it has one, else from the
shared queue; when both are empty the `default` reply is used, or the server answers
HTTP 500 "script exhausted". Each reply reports `usage` exactly as given
(prompt_tokens, completion_tokens, prompt_tokens_details.cached_tokens,
completion_tokens_details.reasoning_tokens), so a test can compare stored tokens
with what the server said. `"stream": true` requests get SSE chunks (usage in the
last chunk when `stream_options.include_usage` is set, as OpenAI does).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.servers._http import QuietHandler, ScriptedServer


@dataclass
class Reply:
    """One scripted chat completion."""

    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, arguments)
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    delay_s: float = 0.0  # wait before answering (a slow model)
    status: int = 200  # non-200 answers with an OpenAI-style error body
    error: str = "scripted error"
    model: str | None = None  # the model name to report; default: the requested one

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage


def text(content: str, **kw: Any) -> Reply:
    """A plain assistant message."""
    return Reply(content=content, **kw)


def tool_call(name: str, arguments: dict[str, Any], **kw: Any) -> Reply:
    """An assistant message with one tool call."""
    return Reply(tool_calls=[(name, arguments)], **kw)


def tool_calls(calls: list[tuple[str, dict[str, Any]]], content: str | None = None, **kw: Any) -> Reply:
    """An assistant message with several tool calls."""
    return Reply(content=content, tool_calls=list(calls), **kw)


class OpenAIServer(ScriptedServer):
    """Scripted `/v1/chat/completions` (+ `/v1/models`) on a free loopback port."""

    thread_name = "openai-server"

    def __init__(self, port: int = 0, default: Reply | None = None):
        super().__init__(port=port)
        self._queue: deque[Reply] = deque()
        self._by_model: dict[str, deque[Reply]] = {}
        self.default = default
        self._ids = itertools.count(1)

    # -- scripting -----------------------------------------------------------
    def script(self, *replies: Reply, model: str | None = None) -> OpenAIServer:
        with self._lock:
            queue = self._queue if model is None else self._by_model.setdefault(model, deque())
            queue.extend(replies)
        return self

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + sum(len(q) for q in self._by_model.values())

    def _next(self, model: str) -> Reply | None:
        with self._lock:
            for name in (model, model.split("/", 1)[-1]):
                queue = self._by_model.get(name)
                if queue:
                    return queue.popleft()
            if self._queue:
                return self._queue.popleft()
            return self.default

    # -- reported totals (what a test compares stored rows with) -------------
    def served(self) -> list[dict[str, Any]]:
        """The usage block of every successful completion served, in order."""
        with self._lock:
            return [r["usage"] for r in self.requests if r.get("usage")]

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # -- HTTP ----------------------------------------------------------------
    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def _send_json(self, status: int, payload: dict[str, Any]) -> None:
                self.send_json(status, payload, {"x-request-id": payload.get("id", "")})

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._send_json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._send_json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                try:
                    body = json.loads(self.read_raw() or b"{}")
                except json.JSONDecodeError:
                    self._send_json(400, {"error": {"message": "body is not JSON"}})
                    return
                record = server.log_request({
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                    "model": body.get("model"),
                    "ts": time.time(),
                })
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                model = str(body.get("model") or "scripted")
                reply = server._next(model)
                if reply is None:
                    self._send_json(500, {"error": {"message": "script exhausted", "type": "server_error"}})
                    return
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    self._send_json(reply.status, {"error": {"message": reply.error, "type": "scripted"}})
                    return
                completion_id = f"chatcmpl-{next(server._ids)}"
                record["usage"] = reply.usage()
                record["id"] = completion_id
                if body.get("stream"):
                    self._stream(reply, model, completion_id, body)
                else:
                    self._send_json(200, _completion(reply, model, completion_id))

            def _stream(self, reply: Reply, model: str, cid: str, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                for chunk in _chunks(reply, model, cid, include_usage):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler


def _message(reply: Reply, cid: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{cid}_{i}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(reply.tool_calls)
        ]
    return message


def _completion(reply: Reply, model: str, cid: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or model,
        "choices": [{
            "index": 0,
            "message": _message(reply, cid),
            "finish_reason": "tool_calls" if reply.tool_calls else "stop",
        }],
        "usage": reply.usage(),
    }


def _chunks(reply: Reply, model: str, cid: str, include_usage: bool) -> list[dict[str, Any]]:
    base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": reply.model or model}
    chunks: list[dict[str, Any]] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    if reply.content:
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": reply.content}}]})
    for i, (name, args) in enumerate(reply.tool_calls):
        chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [{
            "index": i, "id": f"call_{cid}_{i}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }]}}]})
    finish = "tool_calls" if reply.tool_calls else "stop"
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": reply.usage()})
    return chunks


if __name__ == "__main__":  # a quick manual server: python -m tests.servers.openai_server
    srv = OpenAIServer(port=0, default=text("ok")).start()
    print(srv.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.stop()
