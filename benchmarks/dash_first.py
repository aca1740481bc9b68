"""Time to the dashboard's first figure: from a fresh process's start to the Spend box showing
its dollar amount (not the placeholder), as `loopmeter dash` starts on an existing store.

    python benchmarks/dash_first.py --home DIR [--runs 7] [--profile out.prof]

DIR is a LOOPMETER_HOME (e.g. one `loopmeter demo` filled, or `benchmarks/dash.py`'s store:
`--db /tmp/loopmeter-bench.db`). Each run is a new Python process (interpreter start, imports,
store open, app start, first query); the clock starts in the parent just before the process is
started and stops when the Spend box holds a figure. The CPU time of the process (all its
threads) and of the child that computed the figures (loopmeter/tui/first.py) until then are
printed too: they vary less with other load on the machine. `--in-process` starts the old way
(store opened first, figures computed by the dashboard's own worker) for a paired comparison. The first run after a store changed also
builds the usage cache; `--fresh-cache` empties the cache before every run. Target: <= 1.5 s,
goal <= 1.0 s (issue 15).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, os, sys, time
t0 = float(os.environ["LM_T0"])

async def main():
    from loopmeter.analytics.filters import Filters
    from loopmeter.cli.dash import dashboard
    from loopmeter.config import load_settings

    settings = load_settings()
    base = Filters(timezone=settings.timezone or "UTC")
    if os.environ.get("LM_IN_PROCESS"):  # as before tui/first.py: store opened first, figures computed here
        from loopmeter.store import open_store
        from loopmeter.tui.app import LoopmeterApp

        app = LoopmeterApp(open_store(settings.db_url), home=settings.home, value=settings.value,
                           range_name=os.environ["LM_RANGE"], filters=base, live_every=0)
    else:  # as `loopmeter dash` starts
        app, _close = dashboard(settings, os.environ["LM_RANGE"], base, 0)
    async with app.run_test(size=(120, 40)) as pilot:
        box = app.query_one("#kpi-spend")
        while True:
            text = str(box.render())
            if "$" in text or "unpriced" in text:
                break
            await asyncio.sleep(0.002)
        shown = time.time() - t0
        t = os.times()  # the figures' child has been reaped by now: its CPU is in children_*
        print(f"{shown:.4f} {time.process_time():.4f} {t.children_user + t.children_system:.4f} "
              f"{text.splitlines()[0]!r}", flush=True)
        if not os.environ.get("LM_PROFILE"):
            os._exit(0)  # measured; the app's shutdown is not part of it

if os.environ.get("LM_PROFILE"):
    import cProfile
    cProfile.run("asyncio.run(main())", os.environ["LM_PROFILE"])
else:
    asyncio.run(main())
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True, help="the LOOPMETER_HOME to open")
    ap.add_argument("--db", help="a SQLite file to use as the store instead of the home's own")
    ap.add_argument("--range", default="30d")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--fresh-cache", action="store_true", help="remove the home's cache/ before every run")
    ap.add_argument("--profile", help="write one run's cProfile here")
    ap.add_argument("--in-process", action="store_true",
                    help="start as before loopmeter/tui/first.py (store opened first, figures computed in-process)")
    args = ap.parse_args()
    env = {**os.environ, "LOOPMETER_HOME": args.home, "LM_RANGE": args.range, "PYTHONPATH": str(ROOT)}
    if args.db:
        env["LOOPMETER_DB_URL"] = f"sqlite:///{args.db}"
    if args.profile:
        env["LM_PROFILE"] = args.profile
    if args.in_process:
        env["LM_IN_PROCESS"] = "1"
    times, cpu, child = [], [], []
    for i in range(args.runs):
        if args.fresh_cache:
            shutil.rmtree(Path(args.home) / "cache", ignore_errors=True)
        env["LM_T0"] = repr(time.time())
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd="/", capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        seconds, cpu_s, child_s, figure = out.stdout.split(" ", 3)
        times.append(float(seconds))
        cpu.append(float(cpu_s))
        child.append(float(child_s))
        print(f"run {i + 1}: {float(seconds):.2f} s (CPU {float(cpu_s):.2f} s, its figures' child "
              f"{float(child_s):.2f} s)  Spend {figure.strip()}")
        if args.profile:
            break
    print(f"first figure: median {statistics.median(times):.2f} s, min {min(times):.2f} s over {len(times)} runs "
          f"(target <= 1.5 s, goal <= 1.0 s); the process's CPU time until then: median "
          f"{statistics.median(cpu):.2f} s, its child's {statistics.median(child):.2f} s "
          f"(less sensitive to other load on the machine)")


if __name__ == "__main__":
    main()
