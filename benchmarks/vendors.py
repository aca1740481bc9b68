"""`loopmeter vendors sync` for 90 days of a 200-person team on the scripted vendor servers, then
`loopmeter reconcile` against measured spend seeded beside it.

Starts every scripted server in SERVERS whose connector is registered (loopmeter/vendors/) in its
own process on 127.0.0.1, writes their URLs into a temporary LOOPMETER_HOME's loopmeter.toml, and
runs the CLI as a user would: a cold sync of all vendors, then an incremental one (the cursor
starts 3 days back). Prints wall time, rows and requests per vendor and report, and checks the
stored totals against the servers'. Then it stores measured calls for every billed day (the bill
times a deterministic factor, a few days 15-25% under it: calls the logs never saw) and prints
`loopmeter reconcile`'s table.

    python benchmarks/vendors.py [--users 200] [--days 90] [--rows 20]

The hook for a new vendor: add its scripted server to SERVERS (module, class, the attribute
holding its key, the [vendors.NAME] options it needs) and its totals to TOTALS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# vendor -> (server module, class, attribute with the key, [vendors.NAME] options: a value "@attr" reads the server)
SERVERS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "anthropic": ("tests.servers.anthropic_admin_server", "AnthropicAdminServer", "key", {}),
    "openai": ("tests.servers.openai_admin_server", "OpenAIAdminServer", "key", {}),
    "cursor": ("tests.servers.cursor_admin_server", "CursorAdminServer", "key", {}),
    "windsurf": ("tests.servers.windsurf_server", "WindsurfServer", "key", {"credit_usd": 0.04}),
    "copilot": ("tests.servers.copilot_server", "CopilotServer", "token", {"org": "@org"}),
}
# vendor -> (report, stored field, the server's totals() key, scale) compared after the sync
TOTALS: dict[str, list[tuple[str, str, str, float]]] = {
    "anthropic": [("usage_report/messages", "input_tokens", "uncached_input_tokens", 1),
                  ("usage_report/messages", "output_tokens", "output_tokens", 1),
                  ("cost_report", "cost_usd", "billed_usd", 1),
                  ("usage_report/claude_code", "cost_usd", "claude_code_usd", 1)],
    "openai": [("usage/completions", "input_tokens", "uncached_input_tokens", 1),
               ("costs", "cost_usd", "billed_usd", 1)],
    "cursor": [("filtered-usage-events", "cost_usd", "charged_cents", 0.01),
               ("filtered-usage-events", "input_tokens", "input_tokens", 1),
               ("daily-usage-data", "requests", "requests", 1)],
    "windsurf": [("CascadeAnalytics", "credits", "credits", 1),
                 ("CascadeAnalytics", "requests", "messages", 1)],
    "copilot": [("metrics/users-1-day", "requests", "generations", 1),
                ("metrics/users-1-day", "input_tokens", "prompt_tokens", 1),
                ("billing/premium_request", "cost_usd", "net_usd", 1)],
}
# how a measured call of each vendor looks in the usage table (agent, provider, model)
MEASURED = {"anthropic": ("claude-code", "anthropic"), "openai": ("codex", "openai"), "cursor": ("cursor", "cursor"),
            "windsurf": ("windsurf", "windsurf"), "copilot": ("copilot", "github")}

SERVER_SCRIPT = r"""
import importlib, json, sys
from datetime import date
spec = json.loads(sys.argv[1])
out, running = {}, []
for vendor, (module, cls, key_attr, options) in spec["servers"].items():
    server_cls = getattr(importlib.import_module(module), cls)
    srv = server_cls(users=spec["users"], days=spec["days"], start=date.fromisoformat(spec["start"])).start()
    running.append(srv)
    opts = {k: getattr(srv, v[1:]) if isinstance(v, str) and v.startswith("@") else v for k, v in options.items()}
    out[vendor] = {"url": srv.url, "key": getattr(srv, key_attr), "options": opts, "totals": srv.totals()}
print(json.dumps(out, default=str), flush=True)
sys.stdin.read()  # until the benchmark closes it
for srv in running:
    srv.stop()
"""


def _toml_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str) else repr(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rows", type=int, default=20, help="reconcile rows to print (the latest days; 0: all)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from loopmeter.vendors.base import connectors

    registered = connectors()
    servers = {v: s for v, s in SERVERS.items() if v in registered}
    missing = sorted(set(registered) - set(SERVERS))
    today = datetime.now(UTC).date()
    start = today - timedelta(days=args.days - 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, json.dumps(
        {"servers": servers, "users": args.users, "days": args.days, "start": start.isoformat()})],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="lm-vendors-bench-") as tmp:
            run(Path(tmp), info, registered, start, today, args, missing)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)


def run(home: Path, info: dict[str, Any], registered: dict[str, Any], start: date, today: date,
        args: argparse.Namespace, missing: list[str]) -> None:
    toml = []
    env = {**os.environ, "LOOPMETER_HOME": str(home)}
    for vendor, s in info.items():
        toml.append(f"[vendors.{vendor}]")
        toml.append(f"api_url = {_toml_value(s['url'])}")
        toml += [f"{k} = {_toml_value(v)}" for k, v in s["options"].items()]
        env[registered[vendor].env_var] = s["key"]
    (home / "loopmeter.toml").write_text("\n".join(toml) + "\n")
    print(f"{args.users} people, {args.days} days ({start}..{today}), vendors: {', '.join(info)}"
          + (f" (no scripted server here for: {', '.join(missing)})" if missing else ""))

    def cli(*argv: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "loopmeter", *argv], env=env, capture_output=True, text=True,
                             timeout=1800)
        took = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"loopmeter {' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
        return took, out.stdout

    took, out = cli("vendors", "sync", "--since", start.isoformat())
    print(f"\ncold sync, all vendors: {took:.1f} s wall\n" + out)
    took2, out2 = cli("vendors", "sync")
    print(f"incremental sync (cursor - 3 days): {took2:.1f} s wall\n" + out2)
    check_totals(home, info)
    seed_measured(home, start, today)
    took3, table = cli("reconcile", "--since", start.isoformat(), "--until", today.isoformat())
    lines = table.rstrip("\n").split("\n")
    if args.rows:
        # the title, the header, every marked row before the last N rows, the last N rows
        head, body, foot = lines[:4], lines[4:-2], lines[-2:]
        marked = [line for line in body[:-args.rows] if line.rstrip().endswith("│ ! │")]
        lines = head + marked + ["│ …"] + body[-args.rows:] + foot
    print(f"reconcile over {args.days} days: {took3:.1f} s wall\n" + "\n".join(lines))


def check_totals(home: Path, info: dict[str, Any]) -> None:
    from loopmeter.store import open_store
    from loopmeter.store import vendors as vstore

    store = open_store(f"sqlite:///{home / 'loopmeter.db'}")
    try:
        rows = vstore.rows(store)
    finally:
        store.dispose()
    print("stored totals against the servers':")
    for vendor, checks in TOTALS.items():
        if vendor not in info:
            continue
        for report, field, key, scale in checks:
            got = sum(r[field] or 0 for r in rows if r["vendor"] == vendor and r["report"] == report)
            want = float(info[vendor]["totals"][key]) * scale
            ok = abs(got - want) <= 1e-6 * max(1.0, abs(want))
            print(f"  {vendor:<10} {report:<26} {field:<13} stored {got:,.4f}  server {want:,.4f}  "
                  f"{'equal' if ok else 'DIFFERENT'}")
    print()


def seed_measured(home: Path, start: date, today: date) -> None:
    """Measured calls for every billed (day, vendor, model): the bill times ~1 (+/-3%), a few days 15-25% short."""
    from loopmeter.records import UsageRow
    from loopmeter.store import open_store
    from loopmeter.store import vendors as vstore
    from loopmeter.vocab import CostSource

    store = open_store(f"sqlite:///{home / 'loopmeter.db'}")
    rng = random.Random(17)
    try:
        billed: dict[tuple[str, str, str], float] = {}
        for r in vstore.rows(store, start.isoformat(), today.isoformat()):
            if r["tier"] == "billed" and r["cost_usd"] is not None:
                k = (r["date"], r["vendor"], r["model"] or "unknown")
                billed[k] = billed.get(k, 0.0) + r["cost_usd"]
        short_days = {(start + timedelta(days=rng.randrange((today - start).days + 1))).isoformat() for _ in range(6)}
        rows = []
        for i, ((day, vendor, model), usd) in enumerate(sorted(billed.items())):
            factor = rng.uniform(0.75, 0.85) if day in short_days else rng.uniform(0.97, 1.03)
            agent, provider = MEASURED.get(vendor, (vendor, vendor))
            rows.append(UsageRow(key=f"bench:{i}", source="claude-code-log" if vendor == "anthropic" else "otlp",
                                 ts=datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC), model=model, agent=agent,
                                 provider=provider, input_tokens=0, output_tokens=0, cost_usd=round(usd * factor, 6),
                                 cost_source=CostSource.CALCULATED))
        store.add_usage(rows)
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
