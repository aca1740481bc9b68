"""`loopmeter report --format md`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loopmeter.reports import fmt
from loopmeter.reports.kpi_rows import kpi_rows
from loopmeter.reports.tables import TABLES, VENDOR_NOTE, check_text, eval_rows, table_rows, vendor_rows


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(r: dict[str, Any]) -> str:
    out = ["# loopmeter report", "",
           f"Range: {r['filters']['since'] or 'start'} .. {r['filters']['until'] or 'now'} (UTC); "
           f"generated {r['generated_at']}.", ""]
    active = {k: v for k, v in r["filters"].items() if v and k not in ("since", "until", "timezone")}
    if active:
        out += ["Filters: " + ", ".join(f"{k}={v}" for k, v in active.items()), ""]
    out += ["## Key figures", "", md_table(["group", "figure", "value"], [(g, n, t) for g, n, t, _ in kpi_rows(r)]),
            "", "## Value model and assumptions", ""]
    out += [f"- {a}" for a in r["roi"]["assumptions"]]
    out += ["- unpriced calls (no known price for their model) are counted apart, never as $0", ""]
    for key, title in TABLES:
        headers, rows = table_rows(r, key)
        out += [f"## {title}", "", md_table(headers, rows) if rows else "_no data_", ""]
    sec = r.get("vendors")
    if sec is not None:
        vh, vrows, dh, drows = vendor_rows(sec)
        out += ["## Vendors", "", VENDOR_NOTE, "", md_table(vh, vrows) if vrows else "_no vendor figures_", ""]
        out += [f"- {check_text(c)}" for c in sec.get("checks", [])] + ([""] if sec.get("checks") else [])
        if drows:
            out += ["### Vendors by day", "", md_table(dh, drows), ""]
    ev = r.get("evals")
    if ev is not None:
        headers, rows, comps = eval_rows(ev)
        out += ["## Evals", "", md_table(headers, rows) if rows else "_no eval results_", ""]
        out += [f"- {c}" for c in comps] + ([""] if comps else [])
    audit = r.get("audit")
    if audit is not None:
        chain = audit["chain"]
        out += ["## Audit", "", f"Chain: **{chain['status']}**" + (f" — {chain['detail']}" if chain["detail"] else ""),
                "", md_table(["decision", "records"], [(d, fmt.num(n)) for d, n in sorted(audit["decisions"].items())]),
                ""]
    return "\n".join(out)
