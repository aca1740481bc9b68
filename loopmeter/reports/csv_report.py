"""`loopmeter report --format csv`: one long table (section, name, metric, value) with raw values."""

from __future__ import annotations

import csv
import io
from typing import Any

from loopmeter.reports.kpi_rows import kpi_rows

SKIP = {"period", "week"}


def render(r: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "name", "metric", "value"])
    for group, name, _text, raw in kpi_rows(r):
        w.writerow(["kpi", group, name, "" if raw is None else raw])
    for a in r["roi"]["assumptions"]:
        w.writerow(["assumption", "roi", "text", a])
    for dim, rows in r["by"].items():
        for row in rows:
            for k, v in row.items():
                if k != dim:
                    w.writerow([f"by_{dim}", row[dim], k, "" if v is None else v])
    for section in ("spend_by_day", "spend_by_week"):
        for row in r[section]:
            for k, v in row.items():
                if k != "period":
                    w.writerow([section, row["period"], k, "" if v is None else v])
    for row in r["agents"]:
        for k, v in row.items():
            if k != "agent":
                w.writerow(["agent", row["agent"], k, "" if v is None else v])
    for row in r["experiments_per_week"]:
        w.writerow(["experiments_per_week", f"{row['week']}/{row['user']}", "experiments", row["experiments"]])
    for row in (r.get("pull_requests") or {}).get("by_agent", []):
        for k, v in row.items():
            if k != "agent":
                for metric, value in _flat(k, v):
                    w.writerow(["pull_requests_by_agent", row["agent"], metric, "" if value is None else value])
    sec = r.get("vendors") or {}
    for v in sec.get("vendors", []):
        for k, val in v.items():
            if k != "vendor":
                w.writerow(["vendor", v["vendor"], k, "" if val is None else val])
    for c in sec.get("checks", []):
        for k in ("since", "unit", "vendor_says", "stored"):
            w.writerow(["vendor_check", f"{c['vendor']}/{c['check']}", k, "" if c[k] is None else c[k]])
    for d in sec.get("days", []):
        for k, val in d.items():
            if k not in ("date", "vendor"):
                w.writerow(["vendor_day", f"{d['date']}/{d['vendor']}", k, "" if val is None else val])
    for c in (r.get("evals") or {}).get("configs", []):
        for k, v in c.items():
            if k not in ("suite", "config"):
                for metric, value in _flat(k, v):
                    w.writerow(["eval", f"{c['suite']}/{c['config']}", metric, "" if value is None else value])
    return buf.getvalue()


def _flat(key: str, value: Any) -> list[tuple[str, Any]]:
    """A nested value as (key.sub, value) rows: pass_rate_ci.0, pass_at_k.1, error_kinds.infra."""
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(f"{key}.{k}", v)]
    if isinstance(value, list):
        return [row for i, v in enumerate(value) for row in _flat(f"{key}.{i}", v)]
    return [(key, value)]
