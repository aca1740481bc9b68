"""The typed decoders (msgspec.Struct) read what the generic path reads, line for line.

Each source decodes a candidate line with its typed decoder first and falls back to
generic JSON plus type checks when the line does not fit. Both must agree wherever
the typed one accepts a line, including on lines whose types are a little off.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from loopmeter.store.sqlite_writer import sqlite_time
from loopmeter.telemetry.ingest import claude_code, codex
from loopmeter.telemetry.ingest.base import FileContext, parse_ts, ts_text
from tests.fixtures.logs.corpus import generate

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "logs"


def _variants(line: bytes) -> list[bytes]:
    """The line itself and copies with one value's type changed."""
    try:
        obj = json.loads(line)
    except ValueError:
        return [line]
    out = [line]

    def walk(node: object, path: tuple[object, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node[:3]):
                walk(v, (*path, i))
        if path and len(path) <= 5:
            for replacement in (None, True, 5.0, "7", [], {}, -3, 10**30):
                copy = json.loads(line)
                target = copy
                for step in path[:-1]:
                    target = target[step]
                target[path[-1]] = replacement
                out.append(json.dumps(copy).encode())

    walk(obj, ())
    return out


def _lines(root: Path, markers: tuple[bytes, ...]) -> list[bytes]:
    out = []
    for path in sorted(root.rglob("*.jsonl")):
        out.extend(ln for ln in path.read_bytes().splitlines() if any(m in ln for m in markers))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    generate(root, 2, file_mb=0.25)
    return root


@pytest.mark.parametrize("module", [claude_code, codex], ids=["claude-code", "codex"])
def test_typed_and_generic_decoding_agree(module, corpus, tmp_path):
    base = _lines(FIXTURES / ("claude" if module is claude_code else "codex"), module.MARKERS)
    base += _lines(corpus / ("claude" if module is claude_code else "codex"), module.MARKERS)[:40]
    assert len(base) > 20
    typed_ok = fell_back = 0
    for original in base:
        for line in _variants(original):
            ctx = FileContext(path=tmp_path / "x.jsonl", source=module.SOURCE_TAG)
            generic = module._generic(line, ctx)
            try:
                typed = module._typed(line)
            except msgspec.DecodeError:
                fell_back += 1
                continue
            typed_ok += 1
            assert ctx.malformed == 0, line  # a line the typed decoder takes is never malformed
            if module is codex and typed is not None and generic is not None and (
                    typed[0] != "event_msg" or typed[1] != "token_count"):
                # counts are only read from token_count events
                typed, generic = typed[:5], generic[:5]
            assert typed == generic, line
    assert typed_ok > 100 and fell_back > 100  # both paths were exercised


@pytest.mark.parametrize("value", [
    "2026-10-07T09:00:21.162Z", "2026-10-07T09:00:21Z", "2026-10-07T09:00:21.162+02:00", "2026-10-07T09:00:21.162",
    "2026-10-07T23:59:59.999999-05:00", "2026-02-30T09:00:21.162Z", "2026-10-07T09:00:21,162Z", "garbage", "", None, 5,
    "2026-W41-3T09:00:21.162Z",  # an ISO week date: same length as the agents' form, a different day
])
def test_timestamps_become_the_stores_text(value):
    ts = parse_ts(value)
    expected = None if ts is None else sqlite_time(ts)
    assert ts_text(value) == expected
    if expected is not None:
        assert datetime.fromisoformat(expected).replace(tzinfo=UTC) == ts


def test_codex_reads_the_previous_totals_in_either_saved_form():
    # cursors written before this version saved {field: tokens}; now a list
    fields = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
    assert codex._saved_total(dict(zip(fields, (10, 4, 3, 1), strict=True))) == (10, 4, 3, 1)
    assert codex._saved_total({"input_tokens": 10}) == (10, 0, 0, 0)
    assert codex._saved_total([10, 4, 3, 1]) == (10, 4, 3, 1)
    assert codex._saved_total(None) is None
    assert codex._saved_total(["x", 1, 2, 3]) is None


def test_token_counts_past_a_trillion_make_the_line_malformed(tmp_path):
    # so that no sum the store makes (the hourly rollup, a report) can leave a 64-bit column
    from loopmeter.telemetry.ingest.base import MAX_TOKENS, as_int

    assert as_int(MAX_TOKENS) == MAX_TOKENS
    for bad in (MAX_TOKENS + 1, 2**63 - 1, -1, float(MAX_TOKENS) * 10):
        with pytest.raises(ValueError):
            as_int(bad)
    ctx = FileContext(path=tmp_path / "x.jsonl", source=claude_code.SOURCE_TAG)
    line = json.dumps({"timestamp": "2026-10-07T09:00:21.162Z", "requestId": "req_1", "message": {
        "id": "msg_1", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 2**63 - 1, "output_tokens": 1}}})
    assert list(claude_code.parse([line.encode()], ctx)) == [] and ctx.malformed == 1
