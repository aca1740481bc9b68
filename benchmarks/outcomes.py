"""`loopmeter outcomes sync` against the scripted GitHub server with many pull requests.

Starts tests/servers/github_server.py in its own process with --prs pull requests (each
with two reviews and three commits, 100 per list page), then runs the CLI as a user
would, in a temporary LOOPMETER_HOME: a cold sync (every PR, its reviews and commits),
then an incremental sync with nothing new, then one after --changed PRs were updated.
Prints wall time and the requests the server answered for each.

    python benchmarks/outcomes.py [--prs 2000] [--changed 10]

Target (issue 16): <= 10 s cold and <= 1 s incremental for 2,000 PRs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import json, sys, time
from tests.servers.github_server import GitHubServer, pr, review, commit
n = int(sys.argv[1])
srv = GitHubServer(token="bench-token")
def add(i, updated):
    day = 1 + i % 28
    srv.add_pr("o/r", pr(i, f"feat-{i}", created=f"2026-10-{day:02d}T10:00:00Z",
                         merged=f"2026-10-{day:02d}T18:00:00Z" if i % 3 else None,
                         closed=None if i % 3 else f"2026-10-{day:02d}T19:00:00Z", updated=updated),
               reviews=[review("CHANGES_REQUESTED", f"2026-10-{day:02d}T12:00:00Z"),
                        review("APPROVED", f"2026-10-{day:02d}T15:00:00Z")],
               commits=[commit(f"work {i}.{k}\n\nCo-Authored-By: Claude <noreply@anthropic.com>\n",
                               f"2026-10-{day:02d}T1{k}:00:00Z", sha=f"{i:020x}{k:020x}") for k in range(3)])
for i in range(1, n + 1):
    add(i, f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z")
srv.start()
print(srv.url, flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "hits":
        print(srv.hits, flush=True)
    elif cmd[0] == "cpu":
        print(time.process_time(), flush=True)
    elif cmd[0] == "touch":
        for i in range(1, int(cmd[1]) + 1):
            add(i, "2026-12-02T10:00:00Z")
        print("ok", flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prs", type=int, default=2000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--workers", type=int, default=8, help="threads for the in-process runs")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.prs)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert server.stdout and server.stdin
    url = server.stdout.readline().strip()

    def ask(cmd: str) -> str:
        assert server.stdin and server.stdout
        server.stdin.write(cmd + "\n")
        server.stdin.flush()
        return server.stdout.readline().strip()

    try:
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "LOOPMETER_HOME": home, "GITHUB_TOKEN": "bench-token",
                   "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
            env.pop("LOOPMETER_DB_URL", None)
            cmd = [sys.executable, "-m", "loopmeter", "outcomes", "sync", "--github", "o/r", "--api-url", url, "--json"]
            results = []
            for name in ("cold", "incremental (nothing new)", f"incremental ({args.changed} PRs updated)"):
                if name.startswith(f"incremental ({args.changed}"):
                    ask(f"touch {args.changed}")
                before, cpu0 = int(ask("hits")), float(ask("cpu"))
                t0 = time.perf_counter()
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                took = time.perf_counter() - t0
                server_cpu = float(ask("cpu")) - cpu0
                if out.returncode != 0:
                    sys.exit(f"{name}: exit {out.returncode}: {out.stderr.strip()}")
                prs = json.loads(out.stdout)["repos"][0]["prs"]
                results.append((name, took, int(ask("hits")) - before, prs, server_cpu))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "loopmeter", "outcomes", "--json"], env=env, check=True,
                           capture_output=True)
            kpi_s = time.perf_counter() - t0
        in_process = _in_process(url, ask, args.workers)
    finally:
        server.stdin.close()
        server.terminate()
        server.wait(timeout=10)
    print(f"{args.prs:,} PRs on the scripted GitHub server ({os.cpu_count()} CPUs)")
    print(f"the CLI, start-up included (load average {os.getloadavg()[0]:.1f} at the end):")
    for name, took, hits, prs, server_cpu in results:
        print(f"  {name:<32} {took:6.2f} s  {hits:6,} requests  {prs:6,} PRs written  "
              f"(server {server_cpu:5.2f} s CPU)")
    print(f"  {'outcomes --json (KPIs)':<32} {kpi_s:6.2f} s")
    print(f"in one process, imports done ({args.workers} threads for reviews and commits):")
    for name, took, cpu, prs in in_process:
        print(f"  {name:<32} {took:6.2f} s  {cpu:6.2f} s CPU (this process)  {prs:6,} PRs written")


def _in_process(url: str, ask, workers: int) -> list[tuple[str, float, float, int]]:
    """The sync itself, without the interpreter start and imports the CLI pays each time."""
    from datetime import UTC, datetime

    from loopmeter.outcomes import github
    from loopmeter.outcomes.identity import repo_identity
    from loopmeter.outcomes.sync import Db, sync_github

    out = []
    with tempfile.TemporaryDirectory() as home, Db.open(f"sqlite:///{home}/bench.db") as db:
        for name in ("cold", "incremental (nothing new)"):
            t0, c0 = time.perf_counter(), time.process_time()
            with github.Client(url, "bench-token", workers=workers) as client:
                r = sync_github(db, client, "o/r", repo_identity, since=None, now=datetime.now(UTC))
            out.append((name, time.perf_counter() - t0, time.process_time() - c0, r["prs"]))
    return out


if __name__ == "__main__":
    main()
