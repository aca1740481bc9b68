"""Start-up speed: median of 10 cold runs of `loopmeter --help` and `loopmeter doctor --json`,
and the heavy modules that `import loopmeter.cli` loads (there should be none).

    python benchmarks/startup.py [--runs 10]
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

HEAVY = ["litellm", "langgraph", "textual", "pandas", "sqlalchemy", "sqlmodel", "opentelemetry.sdk", "git", "httpx"]


def cli() -> list[str]:
    exe = shutil.which("loopmeter", path=os.path.dirname(sys.executable)) or shutil.which("loopmeter")
    return [exe] if exe else [sys.executable, "-m", "loopmeter"]


def time_runs(args: list[str], runs: int, env: dict[str, str]) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([*cli(), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def heavy_modules(env: dict[str, str]) -> list[str]:
    code = "import sys, loopmeter.cli; print('\\n'.join(sys.modules))"
    mods = set(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split())
    return sorted(h for h in HEAVY if h in mods)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, LOOPMETER_HOME=home, PYTHONDONTWRITEBYTECODE="1")
        time_runs(["--help"], 1, env)  # compile .pyc once, as an installed package would have
        env.pop("PYTHONDONTWRITEBYTECODE")
        subprocess.run([*cli(), "--help"], env=env, stdout=subprocess.DEVNULL)
        for args in (["--help"], ["doctor", "--json"]):
            samples = time_runs(args, ns.runs, env)
            print(f"loopmeter {' '.join(args):<14} median {statistics.median(samples):7.1f} ms  "
                  f"min {min(samples):7.1f} ms  max {max(samples):7.1f} ms  ({ns.runs} runs)")
        heavy = heavy_modules(env)
        print("heavy modules loaded by `import loopmeter.cli`:", ", ".join(heavy) if heavy else "none")


if __name__ == "__main__":
    main()
