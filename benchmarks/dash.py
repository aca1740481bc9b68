"""Dashboard and report speed on a big store: 1,000,000 usage rows, 10,000 attempts, 100,000 audit records.

    python benchmarks/dash.py [--db /tmp/loopmeter-bench.db] [--reseed] [--runs 3] [--timezone ZONE]

Prints: seed time; time to the first complete Overview screen (headless `run_test`, app start to
every KPI, chart and table filled and drawn) with a cold usage cache (first dash on this store)
and warm; tab switch time per tab on first visit (the tab key's action, the tab's query in its
worker, the screen redrawn; Policy's chain verification is timed apart because it runs in a
child process after the records show), and revisits through `Pilot.press`, which adds the test
harness's own waits; `loopmeter report --format html` wall time in a
subprocess (process start included). Targets: first screen <= 1.5 s, tab switch <= 200 ms,
report <= 3 s. --timezone measures the dashboard in a zone (default UTC): in one whose
offset is not a whole hour (Asia/Kolkata) the hours a local day begins inside are read from
the calls (docs/metrics.md, "Local days and weeks").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loopmeter.analytics.filters import Filters  # noqa: E402
from loopmeter.config import ValueModel  # noqa: E402
from loopmeter.store import open_store  # noqa: E402
from tests.analytics.seed import BENCH, FIXED_NOW, seed  # noqa: E402

ANIMATIONS_ON = False
TIMEZONE = "UTC"


async def _wait(pilot, tab) -> None:
    while not tab.ready:
        await pilot.pause(0.002)


async def measure_app(store, home: Path, read_pause: float = 0.0) -> dict[str, float]:
    from loopmeter.tui.app import LoopmeterApp

    t0 = time.perf_counter()
    app = LoopmeterApp(store, home=home, value=ValueModel(value_per_merged_outcome=40.0), now=FIXED_NOW,
                       live_every=0, filters=Filters(timezone=TIMEZONE))
    if ANIMATIONS_ON:  # the tab underline's slide keeps the screen busy ~0.3 s after the content is there
        app.animation_level = "full"
    out: dict[str, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait(pilot, app.query_one("#overview-tab"))
        await pilot.pause()
        out["first_screen_s"] = time.perf_counter() - t0
        if read_pause:  # someone reads the first screen; hidden tabs are prefetched meanwhile
            await asyncio.sleep(read_pause)
            await app.workers.wait_for_complete()
        order = ("usage", "runs", "evals", "policy", "overview")
        for name in order:  # first visit: the key's action, the tab's query, the screen redrawn
            t1 = time.perf_counter()
            app.action_tab(name)
            await _wait(pilot, app.query_one(f"#{name}-tab"))
            await pilot.pause()
            out[f"switch_{name}_s"] = time.perf_counter() - t1
            if name == "policy":
                t2 = time.perf_counter()
                await app.workers.wait_for_complete()
                out["policy_chain_verify_extra_s"] = time.perf_counter() - t2
        for key, name in (("2", "usage"), ("3", "runs"), ("5", "policy")):  # the same through Pilot key presses
            t1 = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            out[f"press_revisit_{name}_s"] = time.perf_counter() - t1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "loopmeter-bench.db"))
    ap.add_argument("--reseed", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--animations", action="store_true",
                    help="measure with Textual animations on (the tab underline slide), as TEXTUAL_ANIMATIONS=full does;"
                         " the dashboard turns them off unless TEXTUAL_ANIMATIONS is set")
    ap.add_argument("--timezone", default="UTC", help="the dashboard's time zone for days and weeks")
    args = ap.parse_args()
    global ANIMATIONS_ON, TIMEZONE
    ANIMATIONS_ON = args.animations
    TIMEZONE = args.timezone
    db = Path(args.db)
    url = f"sqlite:///{db}"
    if args.reseed or not db.exists():
        for p in db.parent.glob(db.name + "*"):
            p.unlink()
        t = time.perf_counter()
        counts = seed(open_store(url), BENCH)
        print(f"seeded {counts} in {time.perf_counter() - t:.1f} s")
    store = open_store(url)
    home = Path(tempfile.mkdtemp(prefix="lm-bench-home-"))
    try:
        results = []
        for i in range(args.runs):
            r = asyncio.run(measure_app(store, home))
            label = "cold cache" if i == 0 else "warm"
            results.append(r)
            print(f"run {i + 1} ({label}): " + ", ".join(f"{k}={v * 1000:.0f}ms" for k, v in r.items()))
        warm = results[1:] or results
        print(f"first screen: cold {results[0]['first_screen_s']:.2f} s, warm median "
              f"{statistics.median(r['first_screen_s'] for r in warm):.2f} s (target <= 1.5 s)")
        switches = [v for r in warm for k, v in r.items() if k.startswith("switch_")]
        presses = [v for r in warm for k, v in r.items() if k.startswith("press_")]
        print(f"tab switch (first visit, action -> data shown -> redrawn): median "
              f"{statistics.median(switches) * 1000:.0f} ms, max {max(switches) * 1000:.0f} ms (target <= 200 ms)")
        print(f"tab revisit through Pilot.press (adds the test harness's own waits): median "
              f"{statistics.median(presses) * 1000:.0f} ms")
        paused = [asyncio.run(measure_app(store, home, read_pause=1.0)) for _ in range(max(1, args.runs - 1))]
        after = [v for r in paused for k, v in r.items() if k.startswith("switch_")]
        print(f"tab switch after reading the first screen for 1 s (tabs prefetched): median "
              f"{statistics.median(after) * 1000:.0f} ms, max {max(after) * 1000:.0f} ms")
        env = {**os.environ, "LOOPMETER_HOME": str(home), "LOOPMETER_DB_URL": url}
        exe = shutil.which("loopmeter", path=os.path.dirname(sys.executable)) or shutil.which("loopmeter")
        cmd = [exe] if exe else [sys.executable, "-m", "loopmeter"]
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run([*cmd, "report", "--range", "all", "--timezone", TIMEZONE, "--format", "html", "-o",
                            str(home / "r.html")],
                           env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        print(f"report --format html: median {statistics.median(times):.2f} s over {len(times)} runs "
              f"(target <= 3 s; includes process start, the git outcome scan and audit chain verification)")
    finally:
        store.dispose()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
