"""A scripted Anthropic Messages API server on 127.0.0.1, for driving real agents offline.

Scripted turns answer the main conversation (requests that offer tools); side
requests an agent makes on its own (a title, a quota probe, count_tokens) get a short
reply and never use up a scripted turn. Every reply reports usage and carries a
`request-id` header; `server.replies` records what was reported so a test can
compare it with what the agent and the store say.

    with AnthropicServer([write_turn("hello.txt", "hi\\n"), text_turn("done")]) as srv:
        env = {"ANTHROPIC_BASE_URL": srv.url}
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

from tests.servers._http import QuietHandler, ScriptedServer
from tests.servers._http import sse_event as _event

DEFAULT_USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
}
SIDE_USAGE = {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


@dataclass
class Turn:
    """One scripted assistant message: text and/or tool_use blocks, with the usage to report."""

    blocks: list[dict[str, Any]]
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    stop_reason: str | None = None  # derived from the blocks when None
    http_status: int | None = None  # answer with this HTTP error instead (see error_turn)
    error_type: str = "api_error"

    def resolved_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(b["type"] == "tool_use" for b in self.blocks) else "end_turn"


def _usage(**kw: int) -> dict[str, int]:
    usage = dict(DEFAULT_USAGE)
    usage.update(kw)
    return usage


def text_turn(text: str, **usage: int) -> Turn:
    return Turn([{"type": "text", "text": text}], _usage(**usage))


def tool_turn(name: str, tool_input: dict[str, Any], text: str | None = None, **usage: int) -> Turn:
    blocks: list[dict[str, Any]] = []
    if text:
        blocks.append({"type": "text", "text": text})
    blocks.append({"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": name, "input": tool_input})
    return Turn(blocks, _usage(**usage))


def error_turn(status: int = 401, error_type: str = "authentication_error",
               message: str = "invalid x-api-key") -> Turn:
    """An HTTP error reply in the API's shape, e.g. 401 for a bad key, 529 overloaded."""
    return Turn([{"type": "text", "text": message}], {k: 0 for k in DEFAULT_USAGE}, http_status=status,
                error_type=error_type)


def write_turn(file_path: str, content: str, **usage: int) -> Turn:
    return tool_turn("Write", {"file_path": file_path, "content": content}, **usage)


def bash_turn(command: str, **usage: int) -> Turn:
    return tool_turn("Bash", {"command": command, "description": "run a command"}, **usage)


@dataclass
class Reply:
    """What the server answered to one /v1/messages request."""

    request_id: str
    message_id: str
    model: str
    scripted: bool  # True for main-conversation turns, False for side requests
    usage: dict[str, int]
    stop_reason: str
    stream: bool
    error: bool = False  # answered with an HTTP error (no usage)


class AnthropicServer(ScriptedServer):
    thread_name = "anthropic-server"

    def __init__(self, turns: Iterable[Turn] = (), *, host: str = "127.0.0.1", port: int = 0,
                 done_text: str = "done", exhausted: Turn | None = None) -> None:
        super().__init__(host, port)  # .requests: every request: method, path, query, headers, body
        self._turns: deque[Turn] = deque(turns)
        self.exhausted = exhausted  # the main-loop reply once the script has run out (default: "done")
        self._ids = itertools.count(1)
        self.done_text = done_text
        self.replies: list[Reply] = []

    # -- script -----------------------------------------------------------
    def add(self, *turns: Turn) -> None:
        with self._lock:
            self._turns.extend(turns)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._turns)

    def scripted_replies(self) -> list[Reply]:
        return [r for r in self.replies if r.scripted]

    def usage_by_model(self) -> dict[str, dict[str, int]]:
        """Sum of the usage reported, per model (all replies, side requests included)."""
        out: dict[str, dict[str, int]] = {}
        for r in self.replies:
            if r.error:
                continue
            acc = out.setdefault(r.model, {k: 0 for k in DEFAULT_USAGE})
            for k, v in r.usage.items():
                acc[k] = acc.get(k, 0) + v
        return out

    # -- answering --------------------------------------------------------
    def _next_turn(self, body: dict[str, Any]) -> tuple[Turn, bool]:
        # The main loop offers tools; titles, quota probes and the like do not.
        if body.get("tools"):
            with self._lock:
                if self._turns:
                    return self._turns.popleft(), True
            return self.exhausted or text_turn(self.done_text), True
        return Turn([{"type": "text", "text": _side_text(body)}], dict(SIDE_USAGE)), False

    def answer(self, body: dict[str, Any]) -> tuple[Reply, Turn]:
        turn, scripted = self._next_turn(body)
        n = next(self._ids)
        reply = Reply(
            request_id=f"req_{n:04d}{uuid.uuid4().hex[:20]}",
            message_id=f"msg_{n:04d}{uuid.uuid4().hex[:20]}",
            model=str(body.get("model") or "claude-sonnet-4-5-20250929"),
            scripted=scripted,
            usage=dict(turn.usage),
            stop_reason=turn.resolved_stop_reason(),
            stream=bool(body.get("stream")),
            error=turn.http_status is not None,
        )
        with self._lock:
            self.replies.append(reply)
        return reply, turn

    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.record_request(self, {})
                path = urlsplit(self.path).path
                if path.rstrip("/").endswith("/v1/models"):
                    self.send_json(200, {"data": [], "has_more": False, "first_id": None, "last_id": None})
                else:
                    self.send_json(200, {})

            def do_HEAD(self) -> None:
                self.send(200, b"", "application/json")

            def do_POST(self) -> None:
                body = self.read_json()
                server.record_request(self, body)
                path = urlsplit(self.path).path.rstrip("/")
                if path.endswith("/v1/messages/count_tokens"):
                    self.send_json(200, {"input_tokens": 10})
                    return
                if not path.endswith("/v1/messages"):
                    self.send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
                    return
                reply, turn = server.answer(body)
                headers = {"request-id": reply.request_id}
                if turn.http_status:
                    err = {"type": "error", "error": {"type": turn.error_type, "message": turn.blocks[0]["text"]},
                           "request_id": reply.request_id}
                    self.send_json(turn.http_status, err, headers)
                    return
                if reply.stream:
                    self.send_sse(_sse(reply, turn), headers)
                else:
                    self.send_json(200, _message(reply, turn), headers)

        return Handler


def _side_text(body: dict[str, Any]) -> str:
    system = json.dumps(body.get("system") or "")
    # Claude Code asks its small model for a JSON title; answer in the shape it parses.
    if "title" in system.lower():
        return json.dumps({"title": "Scripted session", "isNewTopic": False})
    return "ok"


def _message(reply: Reply, turn: Turn) -> dict[str, Any]:
    return {
        "id": reply.message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": turn.blocks,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": {**reply.usage, "service_tier": "standard"},
    }


def _sse(reply: Reply, turn: Turn) -> str:
    start_usage = {**reply.usage, "output_tokens": 1, "service_tier": "standard"}
    out = [_event("message_start", {"type": "message_start", "message": {
        "id": reply.message_id, "type": "message", "role": "assistant", "model": reply.model,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}})]
    out.append(_event("ping", {"type": "ping"}))
    for i, block in enumerate(turn.blocks):
        if block["type"] == "text":
            out.append(_event("content_block_start", {"type": "content_block_start", "index": i,
                                                      "content_block": {"type": "text", "text": ""}}))
            text = block["text"]
            for piece in (text[: len(text) // 2], text[len(text) // 2:]):
                if piece:
                    out.append(_event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                              "delta": {"type": "text_delta", "text": piece}}))
        elif block["type"] == "tool_use":
            out.append(_event("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
            payload = json.dumps(block["input"])
            for piece in (payload[: len(payload) // 2], payload[len(payload) // 2:]):
                out.append(_event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                          "delta": {"type": "input_json_delta", "partial_json": piece}}))
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": i}))
    # The current API repeats the full cumulative usage in message_delta.
    out.append(_event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                                        "usage": dict(reply.usage)}))
    out.append(_event("message_stop", {"type": "message_stop"}))
    return "".join(out)


def main() -> None:  # pragma: no cover - manual use: python -m tests.servers.anthropic_server
    import time

    srv = AnthropicServer().start()
    print(srv.url, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
