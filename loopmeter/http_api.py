"""The one client loopmeter reads remote JSON APIs with (httpx): vendor billing APIs and GitHub.

`ApiHttp` does what every such read needs, once:

- waits on rate limits: 429 always; 403 too when `rate_limit_403` (GitHub's secondary and
  primary limits: a `Retry-After`, or `X-RateLimit-Remaining: 0`). The wait is `Retry-After`
  (seconds or an HTTP date), else `X-RateLimit-Reset` (unix seconds) + 1 s, else
  `default_wait_s`, else a growing pause. A wait longer than `max_wait_s` is either cut to it
  (`refuse_long_waits=False`) or refused as an error (True: "run it again later"); at most
  `max_waits` waits per request;
- retries 5xx answers and network errors `retries` times, pausing `backoff_s`, doubled each time;
- reads at most `max_body` bytes of an answer (more is an error, not memory);
- follows `Link: <...>; rel="next"` pagination (`link_pages`), staying on the base URL's origin,
  at most `max_pages` pages;
- turns everything that goes wrong into one line: a subclass's `error(Failure)` says it in its
  own words (which key, which hint); `scrub` masks the secrets it was given in any message.

Anything else (paging by a token in the body, what a 401 means) stays with the caller.
`check_api_url` is the https-or-loopback rule for every configurable base URL.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from loopmeter.errors import ConfigError, LoopmeterError

_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


def check_api_url(url: str, origin: str) -> str:
    """An https URL, or http to a loopback address (a key never crosses a network in clear)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    loopback = host == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if parts.scheme == "https" and host or parts.scheme == "http" and loopback:
        return url.rstrip("/")
    raise ConfigError(f"{origin}: api_url {url!r} must be https:// (or http:// to this machine)",
                      hint="e.g. https://api.anthropic.com, or http://127.0.0.1:8080 for a local gateway")


@dataclass
class Reply:
    status: int
    headers: Any  # httpx.Headers: case-insensitive
    body: bytes


@dataclass
class Failure:
    """What went wrong, for `ApiHttp.error` to put in words."""

    kind: str  # unreachable | server | rate_limited | too_many_waits | refused | not_json | too_large | bad_link | too_many_pages
    method: str
    path: str  # the request's path as the caller gave it (never the query: it may carry a key)
    status: int | None = None
    tries: int = 0
    wait_s: float = 0.0
    detail: str = ""  # the network error, or the start of a refusal's body


class ApiHttp:
    """One httpx client with the waits, retries and bounds above. Thread-safe (GitHub reads PRs in threads)."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str] | None = None,
                 auth_headers: Mapping[str, str] | None = None, secrets: tuple[str, ...] = (),
                 timeout: float = 30.0, retries: int = 3, backoff_s: float = 0.5,
                 max_wait_s: float = 60.0, max_waits: int = 8, refuse_long_waits: bool = False,
                 default_wait_s: float | None = None, rate_limit_403: bool = False,
                 max_body: int = 64 << 20, max_pages: int = 10_000, max_connections: int = 16,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.auth_headers = dict(auth_headers or {})
        self.secrets = [s for s in (*secrets, *self.auth_headers.values()) if s]
        self.retries, self.backoff_s = retries, backoff_s
        self.max_wait_s, self.max_waits, self.refuse_long_waits = max_wait_s, max_waits, refuse_long_waits
        self.default_wait_s, self.rate_limit_403 = default_wait_s, rate_limit_403
        self.max_body, self.max_pages = max_body, max_pages
        self.sleep, self.clock = sleep, clock
        self.requests = 0
        self.waited_s = 0.0
        self._client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False,
                                    headers={"User-Agent": "loopmeter", **dict(headers or {})},
                                    limits=httpx.Limits(max_connections=max_connections))

    # -- what a subclass words ------------------------------------------------

    def error(self, failure: Failure) -> LoopmeterError:
        """The one-line error for a failure; subclasses say it in their own words."""
        what = {"unreachable": f"unreachable ({failure.detail})", "server": f"{failure.status} after {failure.tries} tries",
                "rate_limited": f"rate-limited for {failure.wait_s:.0f} s", "refused": f"{failure.status}",
                "too_many_waits": f"still rate-limited after {failure.tries} waits"}.get(failure.kind, failure.kind)
        return LoopmeterError(self.scrub(f"{failure.method} {failure.path}: {what}"))

    def scrub(self, message: str) -> str:
        """The message with every secret the client was given masked."""
        for secret in self.secrets:
            if len(secret) >= 4:
                message = message.replace(secret, "***")
        return message

    # -- requests -------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, url: str, *, params: Mapping[str, Any] | None = None, json_body: Any = None,
             with_auth: bool = True) -> Reply:
        """The answer to METHOD url (a path under base_url, or an absolute URL) after the waits and
        retries: a 2xx, or a refusal (4xx, 3xx) for the caller to word. Errors for the rest."""
        import httpx

        path = urlsplit(url).path
        full = url if url.startswith(("http://", "https://")) else self.base_url + url
        headers = self.auth_headers if with_auth else {}
        failures = waits = 0
        while True:
            self.requests += 1
            try:
                reply = self._once(method, full, path, params, json_body, headers)
            except httpx.HTTPError as exc:
                failures += 1
                if failures > self.retries:
                    raise self.error(Failure("unreachable", method, path, tries=failures,
                                             detail=f"{type(exc).__name__}: {exc}")) from None
                self._wait(self.backoff_s * 2 ** (failures - 1))
                continue
            wait = self._rate_wait(reply, waits + 1)
            if wait is not None:
                waits += 1
                if wait > self.max_wait_s:
                    if self.refuse_long_waits:
                        raise self.error(Failure("rate_limited", method, path, reply.status, wait_s=wait))
                    wait = self.max_wait_s
                if waits > self.max_waits:
                    raise self.error(Failure("too_many_waits", method, path, reply.status, tries=waits - 1))
                self._wait(wait)
                continue
            if reply.status >= 500:
                failures += 1
                if failures > self.retries:
                    raise self.error(Failure("server", method, path, reply.status, tries=failures))
                self._wait(self.backoff_s * 2 ** (failures - 1))
                continue
            return reply

    def request_json(self, method: str, url: str, *, params: Mapping[str, Any] | None = None,
                     json_body: Any = None) -> tuple[Any, Any]:
        """The decoded JSON of a 2xx answer and its headers; any other answer is `error(refused)`."""
        reply = self.send(method, url, params=params, json_body=json_body)
        path = urlsplit(url).path
        if reply.status >= 300:
            raise self.error(Failure("refused", method, path, reply.status,
                                     detail=reply.body[:200].decode("utf-8", "replace")))
        try:
            return json.loads(reply.body), reply.headers
        except (ValueError, UnicodeDecodeError):
            raise self.error(Failure("not_json", method, path, reply.status)) from None

    def link_pages(self, url: str, params: Mapping[str, Any] | None = None) -> Iterator[tuple[Any, str]]:
        """(JSON, url) of each page of a GET, following `Link: rel="next"` on the same origin."""
        next_url: str | None = url
        query = dict(params) if params is not None else None
        for _ in range(self.max_pages):
            if next_url is None:
                return
            body, headers = self.request_json("GET", next_url, params=query)
            yield body, next_url
            query = None  # the next link carries the query
            m = _LINK_NEXT.search(headers.get("Link", ""))
            next_url = m.group(1) if m else None
            if next_url and not _same_origin(next_url, self.base_url):
                raise self.error(Failure("bad_link", "GET", urlsplit(url).path))
        if next_url is not None:
            raise self.error(Failure("too_many_pages", "GET", urlsplit(url).path, tries=self.max_pages))

    # -- inside ---------------------------------------------------------------

    def _once(self, method: str, url: str, path: str, params: Any, json_body: Any,
              headers: Mapping[str, str]) -> Reply:
        with self._client.stream(method, url, params=params, json=json_body, headers=headers) as resp:
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > self.max_body:
                    raise self.error(Failure("too_large", method, path, resp.status_code))
                chunks.append(chunk)
            return Reply(resp.status_code, resp.headers, b"".join(chunks))

    def _rate_wait(self, reply: Reply, wait_no: int) -> float | None:
        """Seconds to wait when the answer is a rate limit, else None (a plain 403 is a refusal)."""
        headers = reply.headers
        retry_after = headers.get("Retry-After")
        exhausted = headers.get("X-RateLimit-Remaining") == "0" and headers.get("X-RateLimit-Reset")
        if not (reply.status == 429 or reply.status == 403 and self.rate_limit_403 and (retry_after or exhausted)):
            return None
        seconds = _seconds(retry_after) if retry_after else None
        if seconds is None and exhausted:
            try:
                seconds = max(0.0, float(headers["X-RateLimit-Reset"]) - self.clock()) + 1.0
            except ValueError:
                seconds = None
        if seconds is None or not math.isfinite(seconds):
            seconds = self.default_wait_s if self.default_wait_s is not None else self.backoff_s * 2 ** (wait_no - 1)
        return max(seconds, 0.0)

    def _wait(self, seconds: float) -> None:
        self.waited_s += seconds
        if seconds > 0:
            self.sleep(seconds)


def _seconds(value: str) -> float | None:
    """Retry-After: seconds, or an HTTP date."""
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
