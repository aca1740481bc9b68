"""The audit hash's canonical JSON, written field by field, is byte for byte what json.dumps gives:
records hashed by either verify with the other."""

import json
import random
from datetime import UTC, datetime

from loopmeter.policies.audit import FIELDS, canonical_json, canonical_ts, record_hash

TRICKY = ["", "plain", 'quote " and backslash \\', "tab\tnewline\nreturn\r", "\x00\x01\x1f\x7f", "é ü ß 漢字 🙂",
          "\u2028\u2029", "</script>", "a/b", "{\"json\": [1, 2]}", " leading and trailing "]


def _dumps(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_every_kind_of_value_encodes_as_json_dumps_does():
    rng = random.Random(5)
    for _ in range(2000):
        body = {}
        for k in FIELDS:
            roll = rng.random()
            if roll < 0.2:
                body[k] = None
            elif roll < 0.35:
                body[k] = rng.choice([0, 1, -7, 2**40, 10**30])
            elif roll < 0.4:
                body[k] = rng.choice([True, False, 1.5, 1e-9, [1, "x"], {"b": 1, "a": None}])
            else:
                body[k] = rng.choice(TRICKY) + "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(4)))
        if any(isinstance(v, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in v) for v in body.values()):
            continue  # lone surrogates cannot be hashed by either (not UTF-8)
        assert canonical_json(body) == _dumps({k: body.get(k) for k in FIELDS})


def test_record_hash_matches_the_json_dumps_definition():
    ts = datetime(2026, 11, 25, 9, 30, 1, 123456, tzinfo=UTC)
    record = {k: None for k in FIELDS} | {"seq": 3, "ts": ts, "target": "évil \"x\"", "prev": "0" * 64, "extra": 1}
    import hashlib

    body = {k: record.get(k) for k in FIELDS} | {"ts": canonical_ts(ts)}
    assert record_hash(record) == hashlib.sha256(_dumps(body).encode()).hexdigest()
