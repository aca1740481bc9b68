"""The Vendors section of `loopmeter report` in every format: the seeded store plus Cursor, Windsurf
and Copilot synced from their scripted servers (tests/servers/), the report run in a subprocess."""

from __future__ import annotations

import csv
import io
import json

import pytest

from loopmeter.reports import fmt
from tests.analytics.seed import FIXED_NOW
from tests.reports.test_report_cli import _run
from tests.vendors._tool_sync import sync_three


@pytest.fixture
def synced(seeded, loopmeter_home):
    (loopmeter_home / "loopmeter.toml").write_text("[vendors.windsurf]\ncredit_usd = 0.04\n")
    return sync_three(seeded, loopmeter_home, FIXED_NOW, vendors={"windsurf": {"credit_usd": 0.04}})


def test_every_format_has_the_vendors_section_with_tiers(synced):
    data = json.loads(_run("--format", "json").stdout)
    sec = data["vendors"]
    vendors = {v["vendor"]: v for v in sec["vendors"]}
    cursor_usd = synced["cursor"]["charged_cents"] / 100
    assert vendors["cursor"]["cost_usd"] == pytest.approx(cursor_usd, abs=1e-5)
    assert vendors["cursor"]["tier"] == "billed" and vendors["copilot"]["tier"] == "billed"
    assert vendors["copilot"]["billed_usd"] == pytest.approx(synced["copilot"]["net_usd"], abs=1e-6)
    # Windsurf: credits, and dollars only because a credit price is configured; the vendor's own tier
    assert vendors["windsurf"]["credits"] == pytest.approx(synced["windsurf"]["credits"])
    assert vendors["windsurf"]["cost_usd"] == pytest.approx(synced["windsurf"]["credits"] * 0.04, abs=1e-5)
    assert vendors["windsurf"]["tier"] == "vendor" and vendors["windsurf"]["users"] == 3
    assert all(d["tier"] for d in sec["days"])  # every row says where its figure comes from
    cursor_days = [d for d in sec["days"] if d["vendor"] == "cursor"]
    assert sum(d["cost_usd"] for d in cursor_days) == pytest.approx(cursor_usd, abs=1e-5)

    md = _run("--format", "md").stdout
    assert "## Vendors" in md and "two tiers are never added" in md
    assert f"| cursor | {fmt.money(vendors['cursor']['cost_usd'])} | billed |" in md
    assert "| windsurf |" in md and "### Vendors by day" in md
    cycle = next(c for c in sec["checks"] if c["vendor"] == "cursor")
    assert cycle["vendor_says"] == pytest.approx(cursor_usd, abs=1e-4) and cycle["stored"] == pytest.approx(cursor_usd)
    assert f"- cursor billing cycle spend (/teams/spend) since {cycle['since']}: {fmt.money(cursor_usd)}" in md

    html = _run("--format", "html").stdout
    assert "<h2>Vendors</h2>" in html and "<h2>Vendors by day</h2>" in html
    assert f"<td class=\"n\">{fmt.money(vendors['copilot']['cost_usd'])}</td>" in html

    rows = list(csv.DictReader(io.StringIO(_run("--format", "csv").stdout)))
    tiers = {r["name"]: r["value"] for r in rows if r["section"] == "vendor" and r["metric"] == "tier"}
    assert tiers["cursor"] == "billed" and tiers["windsurf"] == "vendor"
    spend = next(r for r in rows if r["section"] == "vendor" and r["name"] == "cursor" and r["metric"] == "cost_usd")
    assert float(spend["value"]) == pytest.approx(cursor_usd, abs=1e-5)
    assert any(r["section"] == "vendor_day" and r["metric"] == "tier" for r in rows)
    said = next(r for r in rows if r["section"] == "vendor_check" and r["name"].startswith("cursor/")
                and r["metric"] == "vendor_says")
    assert float(said["value"]) == pytest.approx(cursor_usd, abs=1e-4)


def test_without_vendor_figures_the_section_is_measured_spend_only(seeded):
    data = json.loads(_run("--format", "json").stdout)
    sec = data["vendors"]
    assert sec["synced"] is False
    assert {v["tier"] for v in sec["vendors"]} <= {"calculated", "reported", "reported + calculated"}
    assert "## Vendors" in _run("--format", "md").stdout
