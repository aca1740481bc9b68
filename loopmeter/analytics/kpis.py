"""Every KPI in one call: the Overview tab, `loopmeter report` (all formats) and `--json` use this.

The JSON keys are stable and documented in docs/metrics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loopmeter.analytics import attempts as attempts_mod
from loopmeter.analytics import cube as cube_mod
from loopmeter.analytics import evals as evals_mod
from loopmeter.analytics import outcomes as outcomes_mod
from loopmeter.analytics import policy as policy_mod
from loopmeter.analytics import roi as roi_mod
from loopmeter.analytics import spend, spend_box, velocity
from loopmeter.analytics.filters import DIMENSIONS, Filters
from loopmeter.analytics.sums import Db
from loopmeter.config import ValueModel
from loopmeter.store import Store

SCHEMA = "loopmeter.report/1"


@dataclass
class Data:
    """The two frames every KPI is computed from, loaded once per filter change."""

    filters: Filters
    cube: pd.DataFrame
    attempts: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)


def load(store: Store, filters: Filters, home: Path, *, attempts: bool = True) -> Data:
    """Both frames and the Spend box, the attempts and the Spend box read on other threads meanwhile
    (SQLite works without the GIL). `attempts=False` leaves the attempts frame empty."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="loopmeter-load") as pool:
        rows = pool.submit(attempts_mod.load_attempts, store, filters) if attempts else None
        spend = pool.submit(_spend, store, filters)
        cube = cube_mod.load_cube(store, filters, home)
        data = Data(filters, cube, rows.result() if rows else pd.DataFrame(columns=attempts_mod.COLUMNS))
        data.extra["spend"] = spend.result()
    return data


def _spend(store: Store, filters: Filters) -> spend_box.Spend:
    db = Db(store)
    try:
        return spend_box.compute(db, filters)
    finally:
        db.close()


def spend_box_of(data: Data) -> dict[str, Any]:
    """The Spend KPI (analytics/spend_box.py), computed when the data was loaded."""
    result: spend_box.Spend = data.extra["spend"]
    return result.box


def headline(data: Data, value: ValueModel) -> dict[str, Any]:
    """The KPI boxes: spend, outcomes, cost per outcome, velocity, ROI, waste."""
    usage = spend_box_of(data)
    tiered = usage["tiers"]
    outs = outcomes_mod.outcomes(data.attempts)
    return {
        "spend": usage,
        "outcomes": outs,
        "cost_per_outcome": roi_mod.cost_per_outcome(data.attempts, outs["verified"], outs["merged"]),
        "velocity": velocity.velocity(data.attempts, data.filters.tz),
        "roi": roi_mod.roi(data.attempts, value, tiered if tiered["vendor_days"] else None),
        "wasted": roi_mod.wasted_spend(data.attempts),
    }


def agent_table(data: Data) -> pd.DataFrame:
    return roi_mod.by_agent(data.attempts, spend.by_dimension(data.cube, "agent"))


def compute(store: Store, filters: Filters, *, value: ValueModel, home: Path, now: datetime,
            data: Data | None = None, include_evals: bool = True, include_audit: bool = True,
            verify_chain: bool = True, chain_check: Any = None) -> dict[str, Any]:
    """The whole report as plain JSON-ready data. The audit chain is verified in a child process
    while the rest is computed."""
    chain_proc = chain_check  # started by the caller (chain_check.start), or here
    if chain_proc is None and include_audit and verify_chain:
        chain_proc = policy_mod.start_chain_check(store)
    data = data or load(store, filters, home)
    tz = filters.tz
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": now.isoformat(),
        "filters": filters.as_dict(),
        "value_model": {"value_per_merged_outcome": value.value_per_merged_outcome,
                        "hourly_rate": value.hourly_rate, "configured": value.configured},
        **headline(data, value),
        "by": {dim: spend.records(spend.by_dimension(data.cube, dim)) for dim in DIMENSIONS},
        "spend_by_day": spend.records(spend.over_time(data.cube, "day", tz=tz)),
        "spend_by_day_agent": spend.records(spend.over_time(data.cube, "day", by="agent", tz=tz)),
        "spend_by_week": spend.records(spend.over_time(data.cube, "week", tz=tz)),
        "agents": spend.records(agent_table(data)),
        "experiments_per_week": spend.records(velocity.experiments_per_week(data.attempts, tz)),
    }
    from loopmeter.outcomes.kpis import headline as pr_headline

    report["pull_requests"] = pr_headline(store, filters)  # None until `outcomes sync` ran
    from loopmeter.analytics.vendor_section import section as vendor_section

    report["vendors"] = vendor_section(store, filters, data)  # per vendor and UTC day, with the tier
    if include_evals:
        report["evals"] = evals_mod.eval_summary(evals_mod.load_results(store, filters))
    if include_audit:
        report["audit"] = {"decisions": policy_mod.decision_counts(store, filters),
                           "chain": policy_mod.finish_chain_check(chain_proc) if chain_proc is not None else
                           {"status": "not checked", "detail": None, "records": None, "seconds": None}}
    return report
