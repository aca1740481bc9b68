"""What every vendor connector shares: the protocol, the registry, one HTTP client, keys, the sync.

Adding a connector
------------------
1. Write `loopmeter/vendors/<name>.py` with a module-level `CONNECTOR = Connector(...)`:

       CONNECTOR = Connector(
           name="cursor",                       # `loopmeter vendors sync cursor`, vendor_usage.vendor
           title="Cursor Admin API",            # used in messages
           key_name="cursor-admin",             # `loopmeter auth set cursor-admin`; env var in secrets.VENDOR_KEYS
           default_url="https://api.cursor.com",
           auth=lambda key: Auth(headers={"Authorization": basic(key, "")}),   # or Auth(body={...})
           reports=(Report("filtered-usage-events", fetch_events),
                    Report("spend", fetch_spend, window=False)),
       )

   and add `<name>` to `BUILTIN` below if it is not there (a listed module that does not
   exist yet is skipped, so the list may run ahead of the code).
2. A report's `fetch(ctx)` yields `VendorRow`s for the UTC days `ctx.start`..`ctx.end`
   (inclusive), calling the vendor only through `ctx.http` (`get`, `post`, `paginate`,
   `download`): it follows the vendor's paging, waits on 429 (`Retry-After`, capped), retries
   5xx and network errors a bounded number of times, and turns 401/403 into one line naming
   the key and how to set it. Never build another httpx client.
3. Every number from the server goes through `count`, `amount` (with its unit: cents or
   dollars, strings or numbers) and `day`; a result that fails raises ValueError/TypeError/
   KeyError inside `ctx.each(items, parse)`, which counts it as malformed and skips it.
4. Each row has a `key` unique within its report (the sync prefixes vendor and report);
   the same figure must get the same key on every sync. Rows of a `window` report replace
   everything stored for that report on the days synced (a vendor's late corrections win);
   `window=False` reports (a snapshot, e.g. a billing cycle so far) replace by key only.
   Aggregate per day, user and model where the vendor gives events: a row is a figure
   people read, not a call.
5. `tier` is `billed` for what the vendor charges, `vendor` for its own usage figures and
   estimates (vocab.Tier); a `vendor` report that covers one agent's calls only says which
   (`Report(agent=...)`), so the tier rule replaces only that agent's measured spend. Leave
   a field None when the vendor does not say it (never 0). Windsurf-like credits go in
   `credits`; `cost_usd` only when the user configured a price (`ctx.options`, from
   `[vendors.NAME]` in loopmeter.toml). A setting the vendor cannot be read without goes in
   `required_options` (a sync naming no vendor then skips it until it is set); a bad one
   raises ConfigError (one line, the sync stops: bad input).
6. A scripted server following the documented shapes goes in tests/servers/, a test in
   tests/vendors/.

The sync (`sync`) keeps one `sync_cursor` row per (vendor, report): the last day read in
full, when, how many rows, the last error. The next sync starts `overlap_days` before it.
The key is read from the keyring or the environment here, given to the client for its
headers or body, and never written to the store, a log, an error message or a sandbox.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from loopmeter.errors import ConfigError, LoopmeterError
from loopmeter.http_api import ApiHttp, Failure, check_api_url
from loopmeter.vocab import Tier

# connector modules under loopmeter/vendors/, in the order `vendors sync` runs them
BUILTIN = ("anthropic", "openai", "cursor", "windsurf", "copilot")

MAX_PAGES = 10_000  # a server that never stops paging is an error, not a hang
MAX_RESPONSE_BYTES = 64 << 20
MAX_RETRY_AFTER_S = 60.0
MAX_429_WAITS = 8
RETRIES_5XX = 3
BACKOFF_S = 0.5  # before the first retry of a 5xx or a network error; doubled each time
MAX_AMOUNT = 1e12  # dollars, cents or credits beyond this are malformed
MAX_COUNT = 10**15
MAX_ROWS = 2_000_000  # one report's rows in one sync are held in memory before they replace the stored days


class VendorError(LoopmeterError):
    """A vendor API answered with an error or something unreadable; one line, key never in it."""

    exit_code = 1
    status: int | None = None  # the HTTP status of a refused request (e.g. 404: no report for that day)


class VendorAuthError(VendorError):
    """No key, or the vendor refused it (401/403)."""


@dataclass(frozen=True)
class Auth:
    """How the key travels: in headers (most vendors) or merged into every JSON body (Windsurf)."""

    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, str] = field(default_factory=dict)


@dataclass
class VendorRow:
    """One figure from a vendor; becomes a `vendor_usage` row (store/models.py VendorUsage)."""

    key: str  # unique within its (vendor, report); stable across syncs
    date: str  # YYYY-MM-DD, the vendor's (UTC) day
    tier: str  # vocab.Tier: billed | vendor
    vendor_user: str | None = None  # email, API key name or id, as the vendor says it
    model: str | None = None
    cost_usd: float | None = None
    credits: float | None = None
    input_tokens: int | None = None  # uncached input only (cache reads and writes apart)
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    requests: int | None = None
    ts: datetime | None = None  # for a per-event row
    extra: dict[str, Any] | None = None  # what else the vendor said (sessions, commits, lines...)


@dataclass
class SyncContext:
    """What a report's fetch gets: the client, the days to read, options, the previous cursor."""

    vendor: str
    report: str
    http: VendorHttp
    start: date  # first UTC day to read
    end: date  # last UTC day to read (today, usually)
    now: datetime
    options: dict[str, Any] = field(default_factory=dict)  # [vendors.NAME] in loopmeter.toml, without api_url
    cursor: dict[str, Any] = field(default_factory=dict)  # what the previous sync saved
    cursor_out: dict[str, Any] = field(default_factory=dict)  # extra state to save (besides "through")
    malformed: int = 0

    def items(self, value: Any) -> list[Any]:
        """A list from the server as it is; anything else is counted as malformed and read as []."""
        if isinstance(value, list):
            return value
        if value is not None:
            self.malformed += 1
        return []

    def each(self, items: Any, parse: Callable[[Any], Iterable[VendorRow] | VendorRow | None]) -> Iterator[VendorRow]:
        """parse(item) for every item of a list; a malformed item (or a non-list) is counted and skipped."""
        for item in self.items(items):
            try:
                out = parse(item)
                rows = [] if out is None else [out] if isinstance(out, VendorRow) else list(out)
            except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError):
                self.malformed += 1
                continue
            yield from rows

    def days(self, step: int = 1) -> Iterator[tuple[date, date]]:
        """(first, last) day chunks of at most `step` days covering start..end."""
        first = self.start
        while first <= self.end:
            last = min(first + timedelta(days=step - 1), self.end)
            yield first, last
            first = last + timedelta(days=1)


@dataclass(frozen=True)
class Report:
    """One endpoint (or a family) of a vendor: its sync_cursor scope and how to read it."""

    name: str  # sync_cursor.scope and vendor_usage.report, e.g. "usage_report/messages"
    fetch: Callable[[SyncContext], Iterable[VendorRow]]
    window: bool = True  # rows replace what the report stored on the days synced; False: by key only
    # the agent whose calls the report's costs cover (Claude Code analytics: "claude-code"); its
    # figures then stand in for that agent's measured calls only (analytics/tiers.py). None: all
    # of the vendor's calls (a cost report, a tool vendor's usage)
    agent: str | None = None


@dataclass(frozen=True)
class Connector:
    """A vendor: its name, key, default base URL and reports."""

    name: str  # anthropic, openai, cursor, windsurf, copilot
    title: str
    key_name: str  # `loopmeter auth set KEY_NAME`; its env var is secrets.VENDOR_KEYS[key_name]
    default_url: str
    auth: Callable[[str], Auth]
    reports: tuple[Report, ...]
    lookback_days: int = 30  # the first sync reads this far back (unless --since)
    overlap_days: int = 3  # later syncs re-read this many days before the last one read
    # [vendors.NAME] settings it cannot be read without: a sync that names no vendor skips it while
    # one is missing (a GITHUB_TOKEN exported for other tools does not make Copilot a vendor in use)
    required_options: tuple[str, ...] = ()

    @property
    def env_var(self) -> str:
        from loopmeter.secrets import VENDOR_KEYS

        return VENDOR_KEYS[self.key_name]

    def key_hint(self) -> str:
        return f"set it with `loopmeter auth set {self.key_name}` or the environment variable {self.env_var}"


# -- registry ---------------------------------------------------------------

_REGISTRY: dict[str, Connector] = {}


def register(connector: Connector) -> Connector:
    """Add a connector (built-ins register through BUILTIN; a test or plugin may call this)."""
    _REGISTRY[connector.name] = connector
    return connector


def connectors() -> dict[str, Connector]:
    """Every connector by name: the built-in modules that exist, then any registered by hand."""
    for name in BUILTIN:
        if name in _REGISTRY:
            continue
        module_name = f"loopmeter.vendors.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not written yet
                continue
            raise
        register(module.CONNECTOR)
    order = {n: i for i, n in enumerate(BUILTIN)}
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def get_connector(name: str) -> Connector:
    found = connectors()
    try:
        return found[name.lower()]
    except KeyError:
        raise LoopmeterError(f"unknown vendor '{name}'", hint="vendors: " + ", ".join(found)) from None


# -- keys and endpoints -------------------------------------------------------

def vendor_key(connector: Connector, env: Mapping[str, str] | None = None) -> str:
    """The connector's key from the environment or the keyring; a one-line error without one."""
    from loopmeter.secrets import get_key

    value, _ = get_key(connector.key_name, env)
    if not value:
        raise VendorAuthError(f"{connector.name}: no {connector.key_name} key", hint=connector.key_hint())
    return value


def api_url(connector: Connector, options: Mapping[str, Any], override: str | None = None) -> str:
    """--api-url, else [vendors.NAME] api_url, else the vendor's own."""
    if override:
        return check_api_url(override, "--api-url")
    configured = options.get("api_url")
    if configured is not None:
        if not isinstance(configured, str):
            raise ConfigError(f"[vendors.{connector.name}] api_url must be a string")
        return check_api_url(configured, f"[vendors.{connector.name}]")
    return connector.default_url.rstrip("/")


# -- people -------------------------------------------------------------------

def person(people: Mapping[str, str], vendor_user: str | None) -> str | None:
    """The loopmeter user for a vendor's user ([people] in loopmeter.toml; emails match in any case),
    else the vendor's identity as it is."""
    if vendor_user is None:
        return None
    if vendor_user in people:
        return people[vendor_user]
    lowered = {k.lower(): v for k, v in people.items()}
    return lowered.get(vendor_user.lower(), vendor_user)


# -- values from a hostile server ----------------------------------------------

def count(value: Any) -> int | None:
    """A non-negative count from an int, an integral float or a decimal string; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("boolean count")
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"bad count {value!r}") from None
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise ValueError(f"bad count {value!r}")
        value = int(value)
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"fractional count {value!r}")
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"bad count {value!r}")
    return value


def amount(value: Any, unit: str) -> float | None:
    """Money or credits in dollars (or credits): `unit` is "usd" or "cents" (of a dollar or of a
    credit). Numbers or decimal strings; None stays None. Negative amounts (credits, refunds) pass."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("boolean amount")
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"bad amount {value!r}") from None
    elif isinstance(value, int | float):
        number = Decimal(str(value))
    else:
        raise TypeError(f"bad amount {value!r}")
    if not number.is_finite() or abs(number) > Decimal(MAX_AMOUNT):
        raise ValueError(f"bad amount {value!r}")
    if unit == "cents":
        number = number / 100
    elif unit != "usd":
        raise ValueError(f"unknown unit {unit}")
    return float(number)


def day(value: Any) -> str:
    """YYYY-MM-DD (UTC) from an RFC 3339 time, a date, unix seconds or epoch milliseconds (numbers or strings)."""
    if isinstance(value, bool):
        raise TypeError("boolean time")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("bad time")
        seconds = value / 1000 if value > 10**11 else value  # epoch ms past 1973, seconds before 5138
        return datetime.fromtimestamp(seconds, UTC).date().isoformat()
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        ts = datetime.fromisoformat(text)
        return (ts if ts.tzinfo is None else ts.astimezone(UTC)).date().isoformat()
    raise TypeError(f"bad time {value!r}")


def text(value: Any, limit: int = 256) -> str | None:
    """A string field, cut to `limit` characters; anything else is None."""
    return value[:limit] if isinstance(value, str) and value else None


def rfc3339(d: date) -> str:
    return f"{d.isoformat()}T00:00:00Z"


def unix(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


# -- HTTP ---------------------------------------------------------------------

NextPage = Callable[[Any], dict[str, Any] | None]


def token_paging(has_more: str = "has_more", next_field: str = "next_page", param: str = "page") -> NextPage:
    """Anthropic/OpenAI paging: while `has_more`, pass `next_page` back as `page`."""
    def next_page(page: Any) -> dict[str, Any] | None:
        if not isinstance(page, dict) or page.get(has_more) is not True:
            return None
        token = page.get(next_field)
        if not isinstance(token, str | int) or token == "":
            raise VendorError(f"has_more without a usable {next_field}")
        return {param: token}
    return next_page


class VendorHttp(ApiHttp):
    """Every connector's client: the one API client (http_api.py) with the connector's auth, vendor
    paging, and errors that name the key and never contain it."""

    def __init__(self, connector: Connector, base_url: str, key: str, *, timeout: float = 30.0,
                 retries_5xx: int = RETRIES_5XX, max_429_waits: int = MAX_429_WAITS,
                 max_retry_after_s: float = MAX_RETRY_AFTER_S, backoff_s: float = BACKOFF_S,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.connector = connector
        self._auth = connector.auth(key)
        super().__init__(base_url, headers={"Accept": "application/json"}, auth_headers=self._auth.headers,
                         secrets=(key, *self._auth.body.values()), timeout=timeout, retries=retries_5xx,
                         backoff_s=backoff_s, max_wait_s=max_retry_after_s, max_waits=max_429_waits,
                         max_body=MAX_RESPONSE_BYTES, max_pages=MAX_PAGES, sleep=sleep)

    def __enter__(self) -> VendorHttp:
        return self

    def _error(self, message: str, hint: str | None = None, auth: bool = False) -> VendorError:
        from loopmeter.safe_text import printable

        cls = VendorAuthError if auth else VendorError
        return cls(printable(self.scrub(f"{self.connector.name}: {message}"))[:500], hint=hint)

    def error(self, failure: Failure) -> VendorError:
        f = failure
        if f.kind == "refused" and f.status in (401, 403):
            return self._error(f"the server refused the {self.connector.key_name} key ({f.status} on {f.path})",
                               hint=self.connector.key_hint(), auth=True)
        message = {
            "unreachable": f"{f.method} {f.path}: {f.detail}",
            "server": f"{f.method} {f.path}: {f.status} after {f.tries} tries",
            "too_many_waits": f"{f.method} {f.path}: still rate-limited ({f.status}) after {f.tries} waits",
            "refused": f"{f.method} {f.path}: {f.status}: {f.detail}",
            "not_json": f"{f.method} {f.path}: the reply is not JSON",
            "too_large": f"{f.method} {f.path}: reply larger than {self.max_body} bytes",
        }.get(f.kind, f"{f.method} {f.path}: {f.kind}")
        error = self._error(message, hint="sync again later" if f.kind == "too_many_waits" else None)
        if f.kind == "refused":
            error.status = f.status
        return error

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, json_body=body)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json_body: Mapping[str, Any] | None = None) -> Any:
        """The decoded JSON reply of METHOD base_url+path."""
        body = None if json_body is None and method == "GET" else {**(json_body or {}), **self._auth.body}
        return self.request_json(method, path, params=params, json_body=body)[0]

    def download(self, url: str) -> bytes:
        """An absolute URL (e.g. a signed report link) fetched WITHOUT the key, same retry rules."""
        check_api_url(url, f"{self.connector.name} download link")
        reply = self.send("GET", url, with_auth=False)
        if reply.status >= 300:
            raise self.error(Failure("refused", "GET", urlsplit(url).path, reply.status,
                                     detail=reply.body[:200].decode("utf-8", "replace")))
        return reply.body

    def paginate(self, method: str, path: str, next_page: NextPage, *, params: Mapping[str, Any] | None = None,
                 json_body: Mapping[str, Any] | None = None, max_pages: int = MAX_PAGES) -> Iterator[Any]:
        """Each page's JSON, following `next_page(page)`: what to merge into the query (GET) or the body
        (POST) for the next page, or None after the last. A repeated page or too many pages is an error."""
        params, json_body = dict(params or {}), dict(json_body or {}) if json_body is not None else None
        seen: set[str] = set()
        for _ in range(max_pages):
            page = self.request(method, path, params=params, json_body=json_body)
            yield page
            more = next_page(page)
            if more is None:
                return
            marker = json.dumps(more, sort_keys=True, default=str)
            if marker in seen:
                raise self._error(f"{path}: the server sent the same page twice ({marker[:80]})")
            seen.add(marker)
            if method == "GET" or json_body is None:
                params.update(more)
            else:
                json_body.update(more)
        raise self._error(f"{path}: more than {max_pages} pages")


# -- the sync -----------------------------------------------------------------

@dataclass
class SyncResult:
    vendor: str
    report: str
    rows: int = 0
    malformed: int = 0
    error: str | None = None
    hint: str | None = None
    start: str | None = None
    end: str | None = None
    seconds: float = 0.0
    requests: int = 0


def _store_row(vendor: str, report: str, row: VendorRow, people: Mapping[str, str]) -> dict[str, Any]:
    import hashlib

    key = f"{vendor}/{report}/{row.key}"
    if len(key) > 400:
        key = f"{vendor}/{report}/sha256:" + hashlib.sha256(row.key.encode()).hexdigest()
    tier = Tier(row.tier)
    if tier not in (Tier.BILLED, Tier.VENDOR):
        raise ValueError(f"a vendor row is billed or vendor, not {tier}")
    return {
        "key": key, "vendor": vendor, "report": report, "date": day(row.date), "ts": row.ts, "tier": tier.value,
        "vendor_user": text(row.vendor_user), "user": text(person(people, text(row.vendor_user)), 128),
        "model": text(row.model), "cost_usd": row.cost_usd, "credits": row.credits,
        "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
        "cache_read_tokens": row.cache_read_tokens, "cache_write_tokens": row.cache_write_tokens,
        "requests": row.requests,
        "extra": json.dumps(row.extra, sort_keys=True, default=str)[:65536] if row.extra else None,
    }


_SUMMED = ("cost_usd", "credits", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
           "requests")


def _add_into(acc: dict[str, Any], row: dict[str, Any]) -> None:
    """Two figures with the same key in one sync (e.g. cost lines with the same dimensions) are one, summed."""
    for name in _SUMMED:
        if row[name] is not None:
            acc[name] = row[name] if acc[name] is None else acc[name] + row[name]


def sync(store: Any, settings: Any, names: list[str] | None = None, *, api_url_override: str | None = None,
         since: date | None = None, now: datetime | None = None, env: Mapping[str, str] | None = None,
         http_options: Mapping[str, Any] | None = None,
         progress: Callable[[SyncResult], None] | None = None) -> list[SyncResult]:
    """Read each named vendor (all with a key when none is named) into vendor_usage; one result per
    report. Errors are results (and the cursor's last_error), never exceptions, except bad input."""
    from loopmeter.store import vendors as vstore

    now = now or datetime.now(UTC)
    every = connectors()
    chosen = [get_connector(n) for n in names] if names else list(every.values())
    if api_url_override and len(chosen) != 1:
        raise LoopmeterError("--api-url needs exactly one VENDOR", hint="or set api_url under [vendors.NAME]")
    results: list[SyncResult] = []
    for conn in chosen:
        options = dict(settings.vendors.get(conn.name, {}))
        base = api_url(conn, options, api_url_override)
        options.pop("api_url", None)
        if not names and any(options.get(o) in (None, "") for o in conn.required_options):
            continue  # not set up for this vendor
        try:
            key = vendor_key(conn, env)
        except VendorAuthError as exc:
            if not names:
                continue  # not set up: `vendors status` shows it
            for report in conn.reports:
                result = SyncResult(conn.name, report.name, error=exc.message, hint=exc.hint)
                vstore.save_cursor(store, conn.name, report.name, synced_at=None, error=exc.message, now=now)
                results.append(result)
                if progress:
                    progress(result)
            continue
        with VendorHttp(conn, base, key, **dict(http_options or {})) as http:
            for i, report in enumerate(conn.reports):
                result = _sync_report(store, conn, report, http, options, settings.people, since, now)
                results.append(result)
                if progress:
                    progress(result)
                if result.error and result.hint == conn.key_hint():
                    # a refused key is refused by every report: asked once, recorded on each
                    for rest in conn.reports[i + 1:]:
                        vstore.save_cursor(store, conn.name, rest.name, synced_at=None, error=result.error, now=now)
                    break
    return results


def _sync_report(store: Any, conn: Connector, report: Report, http: VendorHttp, options: dict[str, Any],
                 people: Mapping[str, str], since: date | None, now: datetime) -> SyncResult:
    from loopmeter.store import vendors as vstore

    started = time.monotonic()
    requests_before = http.requests
    previous = vstore.get_cursor(store, conn.name, report.name)
    state: dict[str, Any] = {}
    if previous is not None and previous.cursor:
        try:
            loaded = json.loads(previous.cursor)
            state = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            state = {}
    today = now.astimezone(UTC).date()
    start = today - timedelta(days=conn.lookback_days)
    through = state.get("through")
    if isinstance(through, str):
        try:
            start = date.fromisoformat(through) - timedelta(days=conn.overlap_days)
        except ValueError:
            pass
    if since is not None:
        start = since
    start = min(start, today)
    ctx = SyncContext(conn.name, report.name, http, start, today, now, options, state)
    result = SyncResult(conn.name, report.name, start=start.isoformat(), end=today.isoformat())
    try:
        by_key: dict[str, dict[str, Any]] = {}
        for row in report.fetch(ctx):
            try:
                stored = _store_row(conn.name, report.name, row, people)
            except (ValueError, TypeError):
                ctx.malformed += 1
                continue
            if stored["key"] in by_key:
                _add_into(by_key[stored["key"]], stored)
            else:
                by_key[stored["key"]] = stored
                if len(by_key) > MAX_ROWS:
                    raise http._error(f"{report.name}: more than {MAX_ROWS:,} rows in one sync",
                                      hint="sync a shorter range: --since a later day")
        rows = list(by_key.values())
        window = (start.isoformat(), today.isoformat()) if report.window else None
        result.rows = vstore.replace_rows(store, conn.name, report.name, rows, window)
        result.malformed = ctx.malformed
        cursor = {**ctx.cursor_out, "through": today.isoformat()}
        vstore.save_cursor(store, conn.name, report.name, cursor=cursor, synced_at=now, rows=result.rows,
                           error=None, now=now)
    except VendorError as exc:  # a bad [vendors.NAME] setting (ConfigError) is bad input: it ends the sync
        result.error, result.hint = http.scrub(exc.message), exc.hint
        vstore.save_cursor(store, conn.name, report.name, synced_at=None, error=result.error, now=now)
    result.seconds = time.monotonic() - started
    result.requests = http.requests - requests_before
    return result
