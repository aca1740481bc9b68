"""Wall time of `loopmeter eval run gold --agent oracle --agent nop` (the whole shipped suite).

Prints the wall time, the pass rates and the paired difference. Runs in a throwaway
LOOPMETER_HOME so it never touches a real store. Target: <= 60 s on 2 cores.

    python benchmarks/eval_gold.py [--concurrency N] [--sandbox bwrap|none]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="2")
    parser.add_argument("--sandbox", default="bwrap")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lm-bench-eval-") as home:
        env = {**os.environ, "LOOPMETER_HOME": home}
        env.pop("LOOPMETER_DB_URL", None)
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "loopmeter", "eval", "run", "gold", "--agent", "oracle",
                              "--agent", "nop", "--concurrency", args.concurrency, "--sandbox", args.sandbox,
                              "--json"], capture_output=True, text=True, env=env)
        wall = time.monotonic() - started
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    summary = json.loads(out.stdout)
    for cfg in summary["configs"]:
        print(f"{cfg['config']:<8} pass rate {cfg['pass_rate']:.0%} over {cfg['n_tasks']} tasks  "
              f"P50 {cfg['p50_wall_s']} s  P95 {cfg['p95_wall_s']} s")
    for cmp in summary["comparisons"]:
        print(f"{cmp['b']} - {cmp['a']}: {cmp['diff']:+.2f}  95% CI {cmp['ci']}  p {cmp['p_value']:.3g}  "
              f"{cmp['verdict']}")
    print(f"eval run gold (oracle + nop, concurrency {args.concurrency}, sandbox {args.sandbox}): "
          f"{wall:.1f} s wall (target <= 60 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
