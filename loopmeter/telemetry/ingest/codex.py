"""OpenAI Codex CLI rollouts: `$CODEX_HOME/{sessions,archived_sessions}/**/rollout-*.jsonl`.

`token_count` events carry the session's cumulative totals: a call is the difference
from the previous event (`info` is null on rate-limit pings). Codex counts cached
tokens inside `input_tokens` and reasoning inside `output_tokens`; rows store input
as non-cached (input - cached) and cached as cache reads, so totals compare across
tools. The model is the latest `turn_context`'s. Carry-over between reads (previous
totals, model, event count) lives in the cursor's state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from loopmeter.outcomes.identity import safe_url
from loopmeter.records import UsageParams
from loopmeter.telemetry import tokens
from loopmeter.telemetry.ingest.base import (
    STRUCT_ERRORS,
    FileContext,
    Source,
    Tokens,
    as_int,
    json_object,
    str_or_none,
    ts_text,
    usage_params,
)

SOURCE_TAG = "codex-log"
MARKERS = (b'"token_count"', b'"turn_context"', b'"session_meta"')
_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def roots(env: dict[str, str]) -> list[Path]:
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    base = Path(env["CODEX_HOME"]).expanduser() if env.get("CODEX_HOME") else home / ".codex"
    return [d for d in (base / "sessions", base / "archived_sessions") if d.is_dir()]


def files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".jsonl"):
                yield Path(dirpath) / name


# The fields the parser reads, decoded without building the rest of the line. A line
# that does not fit these types goes through the generic decoder and `_generic`.
class _Counts(msgspec.Struct):
    input_tokens: Tokens | None = None
    cached_input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    reasoning_output_tokens: Tokens | None = None


class _Info(msgspec.Struct):
    total_token_usage: _Counts | None = None
    last_token_usage: _Counts | None = None


class _Git(msgspec.Struct):
    branch: str | None = None
    commit_hash: str | None = None
    repository_url: str | None = None


class _Payload(msgspec.Struct):
    type: str | None = None
    id: str | None = None
    cwd: str | None = None
    model: str | None = None
    info: _Info | None = None
    git: _Git | None = None


class _Line(msgspec.Struct):
    timestamp: str | None = None
    type: str | None = None
    payload: _Payload | None = None


_decode_line = msgspec.json.Decoder(_Line).decode
Counts = tuple[int, int, int, int]
Git = tuple[str | None, str | None, str | None]  # session_meta's git: (branch, commit, repository URL)
# (line type, payload type, payload id, payload cwd, payload model, has info, total counts,
# last counts, timestamp, git); strings already checked, None where absent or of another type
_Fields = tuple[Any, Any, Any, Any, Any, bool, "Counts | None", "Counts | None", Any, "Git | None"]


def _struct_counts(c: _Counts | None) -> Counts | None:
    if c is None:
        return None
    return (c.input_tokens or 0, c.cached_input_tokens or 0, c.output_tokens or 0, c.reasoning_output_tokens or 0)


def _typed(line: bytes | memoryview) -> _Fields | None:
    obj = _decode_line(line)
    p = obj.payload
    if p is None:
        return None
    info, g = p.info, p.git
    git = None if g is None else (g.branch, g.commit_hash, g.repository_url)
    if info is None:
        return obj.type, p.type, p.id, p.cwd, p.model, False, None, None, obj.timestamp, git
    return (obj.type, p.type, p.id, p.cwd, p.model, True, _struct_counts(info.total_token_usage),
            _struct_counts(info.last_token_usage), obj.timestamp, git)


def _counts(usage: Any) -> Counts | None:
    """(input, cached input, output, reasoning) tokens of a usage object."""
    if not isinstance(usage, dict):
        return None
    get = usage.get
    return (as_int(get("input_tokens")), as_int(get("cached_input_tokens")), as_int(get("output_tokens")),
            as_int(get("reasoning_output_tokens")))


def _generic(line: bytes | memoryview, ctx: FileContext) -> _Fields | None:
    obj = json_object(line, ctx)
    if obj is None:
        return None
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        return None
    kind, ptype = obj.get("type"), payload.get("type")
    info = payload.get("info")
    fields = (kind, ptype, str_or_none(payload.get("id")), str_or_none(payload.get("cwd")),
              str_or_none(payload.get("model")))
    if info is None or kind != "event_msg" or ptype != "token_count":
        g = payload.get("git")
        git = (str_or_none(g.get("branch")), str_or_none(g.get("commit_hash")),
               str_or_none(g.get("repository_url"))) if isinstance(g, dict) else None
        return (*fields, False, None, None, obj.get("timestamp"), git)
    try:
        if not isinstance(info, dict):
            raise ValueError("info is not an object")
        return (*fields, True, _counts(info.get("total_token_usage")), _counts(info.get("last_token_usage")),
                obj.get("timestamp"), None)
    except ValueError:
        ctx.bad_line()
        return None


def _session_id(ctx: FileContext) -> str:
    found = _UUID.findall(ctx.path.name)
    return found[-1] if found else ctx.path.stem


def _saved_total(value: Any) -> Counts | None:
    """The previous cumulative totals from the cursor state: a list (or, as older
    versions saved it, a {field: tokens} object)."""
    try:
        if isinstance(value, dict):
            return tuple(as_int(value.get(f, 0)) for f in _FIELDS)  # type: ignore[return-value]
        if isinstance(value, list | tuple) and len(value) == 4:
            return tuple(as_int(v) for v in value)  # type: ignore[return-value]
    except ValueError:
        pass
    return None  # none saved (or unreadable): the next event's totals count whole


def parse(lines: Iterable[bytes | memoryview], ctx: FileContext) -> Iterator[UsageParams]:
    st = ctx.state  # saved in the cursor with every checkpoint: kept current before each yield
    before = _saved_total(st.get("total"))
    n = st.get("n", 0)
    for line in lines:
        try:
            fields = _typed(line)
        except STRUCT_ERRORS:
            fields = _generic(line, ctx)
        if fields is None:
            continue
        kind, ptype, pid, cwd, model, has_info, total, last, ts, git = fields
        if kind == "session_meta":
            if pid is not None:
                st["session"] = pid
            if cwd is not None:
                st["cwd"] = cwd
            if git is not None:  # kept in the cursor (later reads of the file still know it): no credentials
                branch, commit, url = git
                st["git"] = [branch, commit, safe_url(url) if url else None]
            continue
        if kind == "turn_context":
            if model is not None:
                st["model"] = model
            if cwd is not None:
                st["cwd"] = cwd
            continue
        if kind != "event_msg" or ptype != "token_count" or not has_info:
            continue  # not a usage event, or a rate-limit ping (info null)
        when = ts_text(ts)
        if when is None:
            ctx.bad_line()
            continue
        delta: Counts
        if total is not None:
            if before is None:
                delta = total
            else:
                t0, t1, t2, t3 = total
                b0, b1, b2, b3 = before
                if t0 >= b0 and t1 >= b1 and t2 >= b2 and t3 >= b3:
                    delta = (t0 - b0, t1 - b1, t2 - b2, t3 - b3)
                else:  # totals went backwards (a new context): trust this call's own figures
                    delta = last or total
            st["total"] = before = total
        elif last is not None:
            delta = last
        else:
            continue
        n += 1
        st["n"] = n
        d_input, d_cached, d_output, d_reasoning = delta
        if not (d_input or d_cached or d_output or d_reasoning):
            continue  # the same totals repeated
        try:
            counts = tokens.openai(d_input, d_cached, d_output, d_reasoning)
        except tokens.TokenCountError:
            ctx.bad_line()
            continue
        session = st.get("session") or _session_id(ctx)
        git = st.get("git")
        branch, commit, url = git if isinstance(git, list) and len(git) == 3 else (None, None, None)
        ctx.saw(session, when, st.get("cwd"), branch, commit, url)
        yield usage_params(ctx, key=f"codex:{session}:{n}", ts=when, model=st.get("model"), session_id=session,
                           project=st.get("cwd"), tokens=counts)


SOURCE = Source(
    name="codex",
    tag=SOURCE_TAG,
    agent="codex",
    provider="openai",
    roots=roots,
    files=files,
    parse=parse,
    markers=MARKERS,
)
