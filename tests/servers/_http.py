"""HTTP plumbing shared by the scripted model servers: a threaded loopback server and a quiet handler.

A server subclasses `ScriptedServer` and builds its request handler, a `QuietHandler`
subclass, in `_handler_class()`; `start()`/`stop()` (or `with`) run it in a daemon thread.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no access log, and helpers to read JSON and send replies."""

    protocol_version = "HTTP/1.1"
    # headers and body go out as two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK, 40 ms a request
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def read_raw(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_json(self) -> Any:
        """The JSON body ({} when empty); a body that is not JSON comes back as {"_raw": its text}."""
        raw = self.read_raw()
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return {"_raw": raw.decode("utf-8", "replace")}

    def send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json", headers)

    def send_sse(self, events: str, headers: dict[str, str] | None = None) -> None:
        """A whole server-sent event stream (see `sse_event`) as one 200 reply."""
        self.send(200, events.encode(), "text/event-stream", {**(headers or {}), "Cache-Control": "no-cache"})


def sse_event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


class ScriptedServer:
    """A ThreadingHTTPServer on a loopback port (0: a free one) with a list of the requests it got."""

    thread_name: str | None = None

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _handler_class(self) -> type[QuietHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_request(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(entry)
        return entry

    def record_request(self, handler: BaseHTTPRequestHandler, body: Any) -> dict[str, Any]:
        """Log method, path, query, headers and body of the request `handler` is answering."""
        parts = urlsplit(handler.path)
        return self.log_request({"method": handler.command, "path": parts.path, "query": parts.query,
                                 "headers": dict(handler.headers.items()), "body": body})
