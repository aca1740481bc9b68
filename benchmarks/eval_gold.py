"""Wall time of `loopmeter eval run gold --agent oracle --agent nop` (the whole shipped suite).

Prints the wall time, the pass rates and the paired difference. Runs in a throwaway
LOOPMETER_HOME so it never touches a real store. Target: <= 60 s on 2 cores.

    python benchmarks/eval_gold.py [--concurrency N] [--sandbox bwrap|none] [--executor local|ray]
                                   [--ray-address auto|start]

`--executor ray --ray-address start` (the default with ray) first starts a one-node cluster
with `ray start --head` on loopback, as docs/deployment.md does on each host (the node offers
`loopmeter_sandbox`), prints how long that took, runs the suite on it and stops it;
`--ray-address auto` lets loopmeter start its own cluster inside the command (included in
the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="2")
    parser.add_argument("--sandbox", default="bwrap")
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    parser.add_argument("--ray-address", default="start", help="start (ray start --head first) or auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lm-bench-eval-") as home:
        env = {**os.environ, "LOOPMETER_HOME": home}
        env.pop("LOOPMETER_DB_URL", None)
        argv = [sys.executable, "-m", "loopmeter", "eval", "run", "gold", "--agent", "oracle", "--agent", "nop",
                "--concurrency", args.concurrency, "--sandbox", args.sandbox, "--json"]
        address = None
        if args.executor == "ray":
            address = start_head(env, Path(home)) if args.ray_address == "start" else args.ray_address
            argv += ["--executor", "ray", "--ray-address", address]
        try:
            started = time.monotonic()
            out = subprocess.run(argv, capture_output=True, text=True, env=env)
            wall = time.monotonic() - started
        finally:
            if args.executor == "ray" and args.ray_address == "start":
                stop_head(Path(home))
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
    where = f", executor ray at {address}" if address else ""
    print(f"eval run gold (oracle + nop, concurrency {args.concurrency}, sandbox {args.sandbox}{where}): "
          f"{wall:.1f} s wall (target <= 60 s)")
    return 0


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def stop_head(home: Path) -> None:
    """Kill this benchmark's cluster alone (`ray stop` would stop every Ray process on the machine):
    the processes whose command line names its temp dir."""
    import signal

    mark = str(home / "ray").encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def start_head(env: dict[str, str], home: Path) -> str:
    """`ray start --head` on loopback with the sandbox capability; prints the time it took."""
    from loopmeter.executors.ray_executor import CAPABILITY, NODE_ENV

    env.update(NODE_ENV)
    env["RAY_AUTH_MODE"] = "disabled"  # head and driver alike, whether or not this machine has a token (loopback only)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cpus = os.cpu_count() or 1
    started = time.monotonic()
    subprocess.run([ray_cli(), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", str(cpus), "--resources", json.dumps({CAPABILITY: cpus}),
                    "--include-dashboard", "false", "--object-store-memory", str(100 * 1024 * 1024),
                    "--temp-dir", str(home / "ray")], env=env, check=True, capture_output=True)
    print(f"ray start --head: {time.monotonic() - started:.1f} s")
    return f"127.0.0.1:{port}"


if __name__ == "__main__":
    raise SystemExit(main())
