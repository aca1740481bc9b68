"""Eval summaries (from `evals/report.py`) as markdown, HTML or plain terminal text."""

from __future__ import annotations

import html
from typing import Any

from loopmeter.reports.fmt import money


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _ci_pct(ci: list[float] | None) -> str:
    return "—" if not ci else f"[{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]"


def _usd_ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{money(ci[0])}, {money(ci[1])}]"


def _num(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:g}{unit}"


def _pass_at_k(cfg: dict[str, Any]) -> str:
    items = cfg.get("pass_at_k") or {}
    return ", ".join(f"@{k} {_pct(v)}" for k, v in items.items()) or "—"


def config_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in summary["configs"]:
        time = (f"{_num(c['p50_latency_ms'], ' ms')} / {_num(c['p95_latency_ms'], ' ms')}"
                if c.get("p50_latency_ms") is not None
                else f"{_num(c['p50_wall_s'], ' s')} / {_num(c['p95_wall_s'], ' s')}")
        rows.append([
            c["config"], f"{c['passed']}/{c['n_cells']}", _pct(c["pass_rate"]), _ci_pct(c["pass_rate_ci"]),
            _pass_at_k(c), time, money(c["cost_usd"], c["unpriced_cells"], what="cell"),
            money(c["cost_per_task_usd"], c["unpriced_cells"], note=False) + _usd_ci(c.get("cost_per_task_ci")),
            money(c["cost_per_solved_usd"], c["unpriced_cells"], note=False) + _usd_ci(c.get("cost_per_solved_ci")),
            str(c["errors"]),
        ])
    return rows


CONFIG_HEADERS = ["config", "passed", "pass rate", "95% CI", "pass@k", "P50 / P95 time", "cost",
                  "cost / task", "cost / solved", "errors"]
COMPARE_HEADERS = ["A", "B", "B − A", "95% CI", "p", "MDE", "verdict"]


def comparison_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in summary["comparisons"]:
        p = "—" if c["p_value"] is None else f"{c['p_value']:.3g} ({c['p_method']})"
        rows.append([c["a"], c["b"], f"{c['diff'] * 100:+.1f} pts", _ci_pct(c["ci"]), p,
                     f"{c['mde'] * 100:.1f} pts", c["verdict"] + ("" if c["paired"] else " (unpaired)")])
    return rows


def notes(summary: dict[str, Any]) -> list[str]:
    out = []
    for c in summary["comparisons"]:
        if c.get("note"):
            out.append(f"{c['a']} vs {c['b']}: {c['note']}")
    for c in summary["configs"]:
        if c["unpriced_cells"]:
            out.append(f"{c['config']}: {c['unpriced_cells']} cell(s) without a known price; costs shown "
                       "cover priced cells only and cost per task/solved is not computed")
        if c["errors"]:
            kinds = ", ".join(f"{k} {n}" for k, n in c["error_kinds"].items())
            out.append(f"{c['config']}: {c['errors']} error(s) ({kinds}), counted as failures")
    for task, why in summary.get("skipped_tasks") or []:
        out.append(f"task {task} skipped: {why}")
    expected, done = summary.get("cells_expected"), summary.get("cells_done")
    if expected and done is not None and done < expected:
        out.append(f"incomplete: {done} of {expected} cells have results (`loopmeter eval resume "
                   f"{summary['run_id']}` continues it)")
    out.append(f"intervals: paired cluster bootstrap over tasks, {summary['n_boot']} resamples, "
               f"seed {summary['seed']}; MDE at 80% power")
    return out


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    esc = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines)


def _title(summary: dict[str, Any]) -> str:
    if "run_a" in summary:
        return f"Eval comparison: {summary['run_a']} vs {summary['run_b']}"
    if summary.get("run_id"):
        return f"Eval {summary['run_id']} — suite {summary.get('suite') or '?'}"
    return "Shadow comparison: primary vs shadow attempts"


def to_markdown(summary: dict[str, Any]) -> str:
    parts = [f"# {_title(summary)}", ""]
    if summary.get("status"):
        parts += [f"status: {summary['status']}, cells: {summary.get('cells_done')}"
                  f"/{summary.get('cells_expected') or '?'}", ""]
    parts += ["## Configurations", "", _md_table(CONFIG_HEADERS, config_rows(summary)), ""]
    if summary["comparisons"]:
        parts += ["## Comparisons", "", _md_table(COMPARE_HEADERS, comparison_rows(summary)), ""]
    parts += ["## Notes", ""] + [f"- {n}" for n in notes(summary)]
    return "\n".join(parts) + "\n"


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _bars(summary: dict[str, Any]) -> str:
    """Pass rate as a bar with its 95% interval as whiskers (inline SVG, no scripts)."""
    rows = summary["configs"]
    height = 26 * len(rows) + 10
    parts = [f'<svg width="560" height="{height}" role="img" aria-label="pass rate with 95% interval">']
    for i, c in enumerate(rows):
        y = 8 + 26 * i
        w = 360 * (c["pass_rate"] or 0)
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{html.escape(c["config"][:22])}</text>')
        parts.append(f'<rect x="170" y="{y}" width="{w:.1f}" height="16" fill="#4a7"/>')
        if c["pass_rate_ci"]:
            lo, hi = (170 + 360 * v for v in c["pass_rate_ci"])
            parts.append(f'<line x1="{lo:.1f}" y1="{y + 8}" x2="{hi:.1f}" y2="{y + 8}" stroke="#222"/>')
            for x in (lo, hi):
                parts.append(f'<line x1="{x:.1f}" y1="{y + 3}" x2="{x:.1f}" y2="{y + 13}" stroke="#222"/>')
        parts.append(f'<text x="{540}" y="{y + 13}" font-size="12" text-anchor="end">{_pct(c["pass_rate"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_html(summary: dict[str, Any]) -> str:
    title = html.escape(_title(summary))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f4f4f4}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{style}</style></head><body><h1>{title}</h1>", _bars(summary),
             "<h2>Configurations</h2>", _html_table(CONFIG_HEADERS, config_rows(summary))]
    if summary["comparisons"]:
        parts += ["<h2>Comparisons</h2>", _html_table(COMPARE_HEADERS, comparison_rows(summary))]
    parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes(summary)] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def to_text(summary: dict[str, Any]) -> str:
    """A compact terminal view: aligned columns, no markup."""
    def table(headers: list[str], rows: list[list[str]]) -> list[str]:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return [fmt.format(*headers)] + [fmt.format(*r) for r in rows]

    lines = [_title(summary), ""]
    lines += table(CONFIG_HEADERS, config_rows(summary))
    if summary["comparisons"]:
        lines += [""] + table(COMPARE_HEADERS, comparison_rows(summary))
    lines += [""] + [f"note: {n}" for n in notes(summary)]
    return "\n".join(lines) + "\n"
