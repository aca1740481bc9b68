"""Sandbox overhead: median over N runs (default 50) of

- the in-process runner `runner.run(["true"])` (what the loop pays per command), beside a plain
  `subprocess.run(["true"])`; with the strict policy (no proxy), the default policy (egress proxy
  and in-sandbox bridge), and strict with the audit log written to SQLite;
- the CLI `loopmeter sandbox exec -- true` beside plain `true` (CLI start-up included).

    python benchmarks/sandbox.py [--runs 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def medians_ms(cases: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Interleaved rounds (one sample of each case per round), so load from other work on the
    machine hits every case alike; median per case."""
    for fn in cases.values():
        fn()  # warm caches (probe, imports)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(xs) for name, xs in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lm-bench-"))
    os.environ["LOOPMETER_HOME"] = str(home)
    from loopmeter.policies import load_policy
    from loopmeter.policies.audit import AuditLog
    from loopmeter.sandbox import make_runner
    from loopmeter.store import open_store

    work = home / "work"
    work.mkdir()
    strict, default = load_policy("strict"), load_policy("default")
    runner = make_runner("bwrap")
    store = open_store(f"sqlite:///{home / 'bench.db'}")
    audited = make_runner("bwrap", store=store, audit=AuditLog(store, home / "audit.anchor"))
    kw = {"workdir": work, "role": "check", "actor": "check"}

    bare = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "true"]
    exe = shutil.which("loopmeter", path=os.path.dirname(sys.executable))
    cli = [exe] if exe else [sys.executable, "-m", "loopmeter"]
    cases: dict[str, Callable[[], object]] = {
        "plain subprocess true": lambda: subprocess.run(["true"]),
        "bare bwrap (reference)": lambda: subprocess.run(bare),
        "runner strict": lambda: runner.run(["true"], policy=strict, **kw),
        "runner default (proxy+bridge)": lambda: runner.run(["true"], policy=default, **kw),
        "runner strict + audit (SQLite)": lambda: audited.run(["true"], policy=strict, **kw),
    }
    ms = medians_ms(cases, args.runs)
    cli_cases: dict[str, Callable[[], object]] = {
        "plain subprocess true": lambda: subprocess.run(["true"]),
        "CLI sandbox exec -- true": lambda: subprocess.run(
            [*cli, "sandbox", "exec", "--policy", "strict", "--workdir", str(work), "--", "true"], check=True),
    }
    cli_ms = medians_ms(cli_cases, args.runs)
    plain = ms.pop("plain subprocess true")
    print(f"runs: {args.runs}   plain subprocess true: {plain:.1f} ms")
    for name, value in ms.items():
        print(f"{name:<32} {value:6.1f} ms   overhead {value - plain:6.1f} ms")
    cli_value = cli_ms["CLI sandbox exec -- true"] - cli_ms["plain subprocess true"]
    print(f"{'CLI sandbox exec -- true':<32} {cli_ms['CLI sandbox exec -- true']:6.1f} ms   overhead "
          f"{cli_value:6.1f} ms (CLI start-up and store open included)")
    store.dispose()
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
