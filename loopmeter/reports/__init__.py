"""Reports in markdown, HTML, CSV and JSON — every format renders `loopmeter.analytics.kpis.compute`."""

from __future__ import annotations

import json
from typing import Any

FORMATS = ("md", "html", "csv", "json")


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, default=str) + "\n"
    if fmt == "md":
        from loopmeter.reports.markdown import render as md

        return md(report)
    if fmt == "html":
        from loopmeter.reports.html_report import render as html

        return html(report)
    if fmt == "csv":
        from loopmeter.reports.csv_report import render as csv

        return csv(report)
    raise ValueError(f"unknown format {fmt!r}")
