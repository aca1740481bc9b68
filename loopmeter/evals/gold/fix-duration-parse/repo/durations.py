"""Parse human durations such as '1h30m' into seconds."""

import re

_PATTERN = re.compile(r"(\d+)h(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text):
    match = _PATTERN.match(text)
    if not match:
        return 0
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
