"""`loopmeter report` in a subprocess against a seeded store: every format, same figures."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess

from tests.conftest import loopmeter_cmd

RANGE = ["--since", "2026-01-01", "--until", "2026-03-02", "--timezone", "UTC"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(loopmeter_cmd("report", *RANGE, *args), capture_output=True, text=True, timeout=120)


def test_json_report_has_stable_keys_and_unpriced_calls(seeded):
    out = _run("--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("schema", "filters", "value_model", "spend", "outcomes", "cost_per_outcome", "velocity", "roi",
                "wasted", "by", "spend_by_day", "agents", "experiments_per_week", "evals", "audit"):
        assert key in data
    assert data["spend"]["calls"] == 400 and data["spend"]["unpriced_calls"] > 0
    assert data["roi"]["shown"] is False
    assert data["audit"]["chain"]["status"] == "ok"
    builtin = next(a for a in data["agents"] if a["agent"] == "builtin")
    assert builtin["cost_usd"] is None


def test_html_report_is_one_self_contained_file_with_svg_charts(seeded, tmp_path):
    target = tmp_path / "r.html"
    out = _run("--format", "html", "-o", str(target))
    assert out.returncode == 0, out.stderr
    html = target.read_text()
    assert html.count("<svg") >= 3
    assert "<script" not in html and not re.search(r"(src|href)=[\"']?https?:", html)
    assert "unpriced" in html and "Value model and assumptions" in html


def test_md_and_csv_agree_with_json(seeded):
    data = json.loads(_run("--format", "json").stdout)
    md = _run("--format", "md").stdout
    assert "| spend | model calls | 400 |" in md
    assert "ROI | not shown: no value model configured" in md
    rows = list(csv.DictReader(io.StringIO(_run("--format", "csv").stdout)))
    calls = next(r for r in rows if r["section"] == "kpi" and r["metric"] == "model calls")
    assert int(calls["value"]) == data["spend"]["calls"]


def test_roi_is_shown_with_its_value_model(seeded, loopmeter_home):
    (loopmeter_home / "loopmeter.toml").write_text("value_per_merged_outcome = 50\n")
    data = json.loads(_run("--format", "json").stdout)
    assert data["roi"]["shown"] is True and data["roi"]["value_usd"] == 100.0
    assert "each merged outcome is worth $50.00" in data["roi"]["assumptions"]


def test_bad_format_and_date_exit_2(store):
    assert _run("--format", "pdf").returncode == 2
    bad = subprocess.run(loopmeter_cmd("report", "--since", "yesterday-ish"), capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot read the date" in bad.stderr
