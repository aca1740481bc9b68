"""`loopmeter report --format html`: one self-contained file (inline CSS and SVG, nothing fetched)."""

from __future__ import annotations

from html import escape
from typing import Any

from loopmeter.reports import fmt, svg
from loopmeter.reports.kpi_rows import kpi_rows
from loopmeter.reports.tables import TABLES, VENDOR_NOTE, check_text, eval_rows, table_rows, vendor_rows

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:980px;color:#1d2330;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
.meta{color:#667}.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:.6rem;margin:1rem 0}
.card{border:1px solid #dde;border-radius:6px;padding:.6rem .8rem}.card .v{font-size:1.35rem;font-weight:600}
.card .s{color:#667;font-size:.85rem}table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:13px}
th,td{border-bottom:1px solid #eef;padding:.25rem .5rem;text-align:left}td.n,th.n{text-align:right}
svg.chart text{font:11px system-ui,sans-serif;fill:#445}svg .grid{stroke:#e4e6ee}svg .whisker{stroke:#1d2330;stroke-width:1.5}
.assume{background:#f6f7fb;border-left:3px solid #4e79a7;padding:.4rem .8rem}.empty{color:#889}
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return '<p class="empty">no data</p>'
    numeric = [all(c[:1] in "$<0123456789-+—[u" and c != "" for c in col) and i > 0
               for i, col in enumerate(zip(*rows, strict=True))]
    head = "".join(f'<th class="{"n" if numeric[i] else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if numeric[i] else ""}">{escape(str(c))}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cards(r: dict[str, Any]) -> str:
    s, o, c, v, roi, w = r["spend"], r["outcomes"], r["cost_per_outcome"], r["velocity"], r["roi"], r["wasted"]
    cards = [
        ("Spend", fmt.money(s["cost_usd"], s["unpriced_calls"], note=False),
         fmt.unpriced_note(s["unpriced_calls"]) or "all priced"),
        ("Verified outcomes", fmt.num(o["verified"]), f"{fmt.pct(v['success_rate'])} of {o['finished']:,}; "
         f"{o['merged']:,} merged"),
        ("Cost / outcome", fmt.money_per(c["per_verified_usd"], c["cost_usd"], c["unpriced_calls"]),
         f"merged {fmt.money_per(c['per_merged_usd'], c['cost_usd'], c['unpriced_calls'])}"),
        ("Time to green", f"p50 {fmt.duration(v['time_to_green_p50_s'])}", f"p90 {fmt.duration(v['time_to_green_p90_s'])}"),
        ("ROI", fmt.roi_text(roi), roi["assumptions"][0] if roi["assumptions"] else ""),
        ("Wasted spend", fmt.money(w["cost_usd"], w["unpriced_attempts"], what="attempt"),
         f"{fmt.pct(w['share'])} of attempt cost"),
        ("Cache hit", fmt.pct(s["cache_hit_ratio"]), f"{fmt.tokens(s['tokens']['cache_read'])} cache-read tokens"),
        ("Experiments", fmt.num(v["attempts"]), f"{fmt.num(v['experiments_per_person_week'], 1)} / person / week"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="s">{escape(t)}</div><div class="v">{escape(val)}</div>'
        f'<div class="s">{escape(sub)}</div></div>' for t, val, sub in cards) + "</div>"


def _spend_chart(r: dict[str, Any]) -> str:
    rows = r["spend_by_day_agent"]
    days = sorted({d["period"] for d in rows})
    agents = sorted({d["agent"] for d in rows})
    idx = {d: i for i, d in enumerate(days)}
    series = {a: [0.0] * len(days) for a in agents}
    for d in rows:
        series[d["agent"]][idx[d["period"]]] += d["cost"] or 0.0
    return svg.stacked_bars(days, series, value_fmt=lambda x: fmt.money(x))


def _experiments_chart(r: dict[str, Any]) -> str:
    rows = r["experiments_per_week"]
    weeks = sorted({d["week"] for d in rows})
    users = sorted({d["user"] for d in rows})
    series = {u: [0.0] * len(weeks) for u in users}
    for d in rows:
        series[d["user"]][weeks.index(d["week"])] += d["experiments"]
    return svg.stacked_bars(weeks, series, value_fmt=lambda x: f"{x:,.0f}")


def render(r: dict[str, Any]) -> str:
    f = r["filters"]
    active = {k: v for k, v in f.items() if v and k not in ("since", "until", "timezone")}
    out = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
           "<meta name=viewport content='width=device-width,initial-scale=1'>",
           f"<title>loopmeter report</title><style>{CSS}</style></head><body>",
           "<h1>loopmeter report</h1>",
           f'<p class="meta">{escape(f["since"] or "start")} .. {escape(f["until"] or "now")} (UTC) · generated '
           f'{escape(r["generated_at"])}' + (" · " + escape(", ".join(f"{k}={v}" for k, v in active.items()))
                                              if active else "") + "</p>",
           _cards(r),
           '<div class="assume"><b>Value model and assumptions</b><ul>' +
           "".join(f"<li>{escape(a)}</li>" for a in r["roi"]["assumptions"]) +
           "<li>unpriced calls (no known price for their model) are counted apart, never as $0</li></ul></div>",
           "<h2>Spend per day by agent</h2>", _spend_chart(r),
           "<h2>Experiments per week by person</h2>", _experiments_chart(r),
           "<h2>Spend by model</h2>",
           svg.hbars([d["model"] for d in r["by"]["model"]], [d["cost"] or 0.0 for d in r["by"]["model"]],
                     value_fmt=lambda x: fmt.money(x)),
           "<h2>Key figures</h2>",
           _table(["group", "figure", "value"], [[g, n, t] for g, n, t, _ in kpi_rows(r)])]
    for key, title in TABLES:
        headers, rows = table_rows(r, key)
        out += [f"<h2>{escape(title)}</h2>", _table(headers, rows)]
    sec = r.get("vendors")
    if sec is not None:
        vh, vrows, dh, drows = vendor_rows(sec)
        checks = "".join(f"<li>{escape(check_text(c))}</li>" for c in sec.get("checks", []))
        out += ["<h2>Vendors</h2>", f'<p class="meta">{escape(VENDOR_NOTE)}</p>', _table(vh, vrows),
                f"<ul>{checks}</ul>" if checks else "",
                "<h2>Vendors by day</h2>", _table(dh, drows)]
    ev = r.get("evals")
    if ev is not None:
        headers, rows, comps = eval_rows(ev)
        cfg = ev["configs"]
        out += ["<h2>Evals: pass rate with 95% interval</h2>",
                svg.interval_bars([f"{c['suite']} · {c['config']}" for c in cfg],
                                  [c["pass_rate"] or 0.0 for c in cfg], [(c["pass_rate_ci"] or [0, 1])[0] for c in cfg],
                                  [(c["pass_rate_ci"] or [0, 1])[1] for c in cfg]),
                _table(headers, rows), "<ul>" + "".join(f"<li>{escape(c)}</li>" for c in comps) + "</ul>"]
    audit = r.get("audit")
    if audit is not None:
        chain = audit["chain"]
        out += ["<h2>Audit</h2>", f"<p>Chain: <b>{escape(chain['status'])}</b>"
                + (f" — {escape(str(chain['detail']))}" if chain["detail"] else "") + "</p>",
                _table(["decision", "records"], [[d, fmt.num(n)] for d, n in sorted(audit["decisions"].items())])]
    out.append("</body></html>")
    return "\n".join(out)
