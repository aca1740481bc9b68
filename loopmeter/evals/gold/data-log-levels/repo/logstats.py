"""Count log levels per hour."""


def count_levels(lines):
    by_hour = {}
    for line in lines:
        ts, level, _ = line.split(" ", 2)
        bucket = ts[:16]
        by_hour.setdefault(bucket, {})
        by_hour[bucket][level] = by_hour[bucket].get(level, 0) + 1
    return {"by_hour": by_hour, "malformed": 0}
