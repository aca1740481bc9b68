"""Count log levels per hour."""

import re

_LINE = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}):\d{2}:\d{2}Z (DEBUG|INFO|WARN|ERROR)(?: .*)?")


def count_levels(lines):
    by_hour, malformed = {}, 0
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        if not match:
            malformed += 1
            continue
        bucket, level = match.groups()
        counts = by_hour.setdefault(bucket, {})
        counts[level] = counts.get(level, 0) + 1
    return {"by_hour": by_hour, "malformed": malformed}
