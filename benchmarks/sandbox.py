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
from pathlib import Path


def median_ms(fn, runs: int) -> float:
    fn()  # warm caches (probe, imports)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


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

    plain = median_ms(lambda: subprocess.run(["true"]), args.runs)
    bare = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "true"]
    rows = [
        ("bare bwrap (reference)", median_ms(lambda: subprocess.run(bare), args.runs)),
        ("runner strict", median_ms(lambda: runner.run(["true"], policy=strict, **kw), args.runs)),
        ("runner default (proxy+bridge)", median_ms(lambda: runner.run(["true"], policy=default, **kw), args.runs)),
        ("runner strict + audit (SQLite)", median_ms(lambda: audited.run(["true"], policy=strict, **kw), args.runs)),
    ]
    exe = shutil.which("loopmeter", path=os.path.dirname(sys.executable))
    cli = [exe] if exe else [sys.executable, "-m", "loopmeter"]
    cli_ms = median_ms(lambda: subprocess.run([*cli, "sandbox", "exec", "--policy", "strict", "--workdir", str(work),
                                               "--", "true"], check=True), args.runs)
    print(f"runs: {args.runs}   plain subprocess true: {plain:.1f} ms")
    for name, ms in rows:
        print(f"{name:<32} {ms:6.1f} ms   overhead {ms - plain:6.1f} ms")
    print(f"{'CLI sandbox exec -- true':<32} {cli_ms:6.1f} ms   overhead {cli_ms - plain:6.1f} ms (CLI start-up included)")
    store.dispose()
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
