"""The candidate-line reader against a plain split of the same bytes, at chunk sizes that cut
lines (and markers) everywhere."""

import io
import random

import pytest

from loopmeter.telemetry.ingest.base import ReadStats, read_candidates

MARKERS = (b'"token_count"', b'"turn_context"')


def _lines(rng: random.Random) -> list[bytes]:
    out = []
    for i in range(400):
        kind = rng.randrange(4)
        filler = b"x" * rng.choice([0, 5, 40, 300, 5000])
        if kind == 0:
            out.append(b'{"n":%d,"type":"token_count","pad":"%s"}' % (i, filler))
        elif kind == 1:
            out.append(b'{"n":%d,"pad":"%s","type":"turn_context"}' % (i, filler))
        else:
            out.append(b'{"n":%d,"pad":"%s"}' % (i, filler))
    return out


@pytest.mark.parametrize("chunk", [7, 13, 64, 1000, 4096, 1 << 20])
def test_every_chunk_size_finds_exactly_the_marked_lines(chunk):
    rng = random.Random(chunk)
    lines = _lines(rng)
    data = b"\n".join(lines) + b"\n"
    stats = ReadStats(end=0)
    got = [bytes(line) for line in read_candidates(io.BytesIO(data), 0, len(data), MARKERS, stats, final=True,
                                                   chunk_bytes=chunk)]
    assert got == [ln for ln in lines if any(m in ln for m in MARKERS)]
    assert stats.end == len(data)


def test_a_range_from_the_middle_and_an_unfinished_last_line():
    lines = _lines(random.Random(3))
    data = b"\n".join(lines) + b"\n"
    start = len(b"\n".join(lines[:50])) + 1
    tail = b'{"n":9999,"type":"token_count"'  # a writer is midway through this line
    blob = data + tail
    stats = ReadStats(end=start)
    got = [bytes(line) for line in read_candidates(io.BytesIO(blob), start, len(blob), MARKERS, stats, final=True,
                                                   chunk_bytes=97)]
    assert got == [ln for ln in lines[50:] if any(m in ln for m in MARKERS)]
    assert stats.end == len(data), "the unfinished line is left to be read again once complete"


def test_lines_over_the_limit_are_skipped_and_counted_when_they_held_a_marker():
    long_marked = b'{"type":"token_count","pad":"' + b"y" * 3000 + b'"}'
    long_plain = b'{"pad":"' + b"z" * 3000 + b'"}'
    short = b'{"type":"turn_context"}'
    data = b"\n".join([short, long_marked, short, long_plain, short]) + b"\n"
    stats = ReadStats(end=0)
    got = [bytes(line) for line in read_candidates(io.BytesIO(data), 0, len(data), MARKERS, stats, final=True,
                                                   chunk_bytes=256, max_line_bytes=1024)]
    assert got == [short, short, short]
    assert stats.oversized_candidates == 1 and stats.end == len(data)
