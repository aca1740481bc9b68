"""`loopmeter usage` against ccusage on a generated corpus of Claude Code and Codex logs.

    python benchmarks/usage.py [--mb 1024] [--layout many|single] [--runs 3] [--keep DIR] [--against CHECKOUT]
                               [--db-url postgresql://USER@HOST:PORT/DB]

Generates about --mb MB of logs (many session files, or --layout single: one Claude
Code transcript of that size), then prints for loopmeter:
  cold = first `loopmeter usage daily --json` on an empty store (ingest + report),
  warm = the same command again (only stats files and runs the SQL aggregate),
with wall time and peak RSS (the largest single process, from wait4, and the whole
process tree summed, sampled from /proc every 10 ms), and the same for
`ccusage daily --json --offline` when it runs here (it re-reads every log each time,
so each of its runs is a cold one). Cold runs (each on a new empty store) and ccusage
runs alternate, --runs of each, so that both see the same machine; medians are
compared, with the range. It also checks that both report identical tokens per day
and model for each agent.
Targets on 2 cores for 1 GB: cold no slower than ccusage, warm <= 1 s, RSS <= 300 MB.

--against CHECKOUT compares two versions instead: cold runs of this checkout and of another
one (e.g. `git worktree add /tmp/before <commit>`) alternate, each started from its own
folder; prints both medians, in how many pairs this one was faster, and whether both
stored the same calls and tokens.

--db-url SERVER stores into PostgreSQL instead of SQLite: each cold run gets a new, empty
database on that server (created through its URL's database, dropped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.logs.ccusage import ccusage_status, loopmeter_daily, parse_ccusage  # noqa: E402
from tests.fixtures.logs.corpus import generate  # noqa: E402


def _tree_rss_kb(pid: int) -> int:
    """Summed VmRSS of pid and its descendants, from /proc."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> dict[str, float | str]:
    """Wall seconds, peak RSS of the largest process and of the whole tree (MB), and stdout."""
    out_file = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=out_file, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=cwd)
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.is_set():
            peak_tree = max(peak_tree, _tree_rss_kb(proc.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {stderr[-2000:]}")
    out_file.seek(0)
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "tree_rss_mb": peak_tree / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime,  # its worker processes included (it waits for them)
            "stdout": out_file.read().decode()}


def _median(runs: list[dict[str, float | str]]) -> dict[str, float | str]:
    """The run with the median wall time."""
    mid = statistics.median(float(r["wall_s"]) for r in runs)
    return min(runs, key=lambda r: abs(float(r["wall_s"]) - mid))


def _spread(runs: list[dict[str, float | str]]) -> str:
    walls = [float(r["wall_s"]) for r in runs]
    return f"   [{min(walls):.2f}-{max(walls):.2f} s]"


def loopmeter_argv() -> list[str]:
    return [sys.executable, "-m", "loopmeter", "usage", "daily", "--json", "--timezone", "UTC"]


def line(name: str, m: dict[str, float | str]) -> str:
    return (f"  {name:<22} {float(m['wall_s']):7.2f} s   peak RSS {float(m['rss_mb']):6.0f} MB (largest process)"
            f" {float(m['tree_rss_mb']):6.0f} MB (tree)")


class Databases:
    """A new, empty store per cold run: a SQLite file under LOOPMETER_HOME (None), or a new
    PostgreSQL database on the server of `server_url`, dropped by `drop_all`."""

    def __init__(self, server_url: str | None):
        self.server_url, self.made = server_url, []

    def fresh(self, env: dict[str, str]) -> dict[str, str]:
        if self.server_url is None:
            return env
        import uuid

        import psycopg

        name = f"loopmeter_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        self.made.append(name)
        return {**env, "LOOPMETER_DB_URL": self.server_url.rsplit("/", 1)[0] + "/" + name}

    def drop_all(self) -> None:
        if self.server_url is None:
            return
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f"DROP DATABASE IF EXISTS {name}")


def compare(other: Path, env: dict[str, str], lm_home: Path, runs: int, dbs: Databases) -> None:
    """Paired cold runs: this checkout and `other` alternate (which goes first alternates too),
    each started from its own folder so that `python -m loopmeter` imports its own code."""
    here = Path(__file__).resolve().parent.parent
    versions = {"this": here, "other": other}
    walls: dict[str, list[float]] = {"this": [], "other": []}
    cpus: dict[str, list[float]] = {"this": [], "other": []}
    totals: dict[str, set[str]] = {"this": set(), "other": set()}
    for i in range(runs):
        for name in (("this", "other") if i % 2 == 0 else ("other", "this")):
            shutil.rmtree(lm_home, ignore_errors=True)
            m = measure(loopmeter_argv(), {**dbs.fresh(env), "PYTHONPATH": str(versions[name])}, cwd=versions[name])
            walls[name].append(float(m["wall_s"]))
            cpus[name].append(float(m["cpu_s"]))
            totals[name].add(json.dumps(json.loads(str(m["stdout"]))["totals"], sort_keys=True))
    for name, folder in versions.items():
        w, c = walls[name], cpus[name]
        print(f"  {name:<6} {folder}: cold median {statistics.median(w):.3f} s [{min(w):.2f}-{max(w):.2f} s], "
              f"CPU (user + system, all processes) median {statistics.median(c):.3f} s [{min(c):.2f}-{max(c):.2f} s]")
    for label, values in (("wall", walls), ("CPU", cpus)):
        wins = sum(a < b for a, b in zip(values["this"], values["other"], strict=True))
        ratio = statistics.median(values["this"]) / statistics.median(values["other"])
        print(f"  {label}: this / other (medians) {ratio:.3f}; this lower in {wins} of {runs} pairs")
    same = len(totals["this"] | totals["other"]) == 1
    print(f"  totals (calls, tokens, cost): {'identical' if same else 'DIFFERENT'} in every run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=1024, help="corpus size in MB (default 1024)")
    ap.add_argument("--layout", choices=["many", "single"], default="many",
                    help="many session files (Claude Code + Codex), or one Claude Code transcript")
    ap.add_argument("--runs", type=int, default=5, help="cold, warm and ccusage runs each (medians reported)")
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    ap.add_argument("--against", type=Path, help="another checkout: paired cold runs of both versions")
    ap.add_argument("--db-url", help="a PostgreSQL server to store into (a new database per cold run)")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="loopmeter-usage-bench-"))
    dbs = Databases(args.db_url)
    try:
        t0 = time.perf_counter()
        shutil.rmtree(root / "corpus", ignore_errors=True)  # generate() appends to the files it finds
        if args.layout == "single":
            expected = generate(root / "corpus", args.mb, claude_share=1.0, file_mb=args.mb)
        else:
            expected = generate(root / "corpus", args.mb)
        print(f"corpus: {expected.bytes_written / (1 << 20):.0f} MB in {expected.files} files "
              f"({args.layout}), generated in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} cores")
        home = root / "home"
        home.mkdir(exist_ok=True)
        lm_home = root / "lmhome"
        shutil.rmtree(lm_home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_DATA_DIR", "LOOPMETER_DB_URL")}
        env.update(HOME=str(home), LOOPMETER_HOME=str(lm_home), CLAUDE_CONFIG_DIR=str(root / "corpus" / "claude"),
                   CODEX_HOME=str(root / "corpus" / "codex"), LITELLM_LOCAL_MODEL_COST_MAP="True")

        if args.against is not None:
            compare(args.against.resolve(), env, lm_home, args.runs, dbs)
            return
        path, why = ccusage_status()
        cc_argv = [path, "daily", "--json", "--offline", "--timezone", "UTC"] if path else None
        colds: list[dict[str, float | str]] = []
        cc_runs: list[dict[str, float | str]] = []
        for _ in range(args.runs):  # alternate: machine noise hits both alike
            shutil.rmtree(lm_home, ignore_errors=True)
            env = dbs.fresh(env)
            colds.append(measure(loopmeter_argv(), env))
            if cc_argv:
                cc_runs.append(measure(cc_argv, env))
        warm_runs = [measure(loopmeter_argv(), env) for _ in range(args.runs)]
        cold, warm = _median(colds), _median(warm_runs)
        print("loopmeter usage daily --json")
        print(line(f"cold (median of {len(colds)})", cold) + _spread(colds))
        print(line(f"warm (median of {len(warm_runs)})", warm) + _spread(warm_runs))
        ours = json.loads(str(cold["stdout"]))
        ingest = ours.get("ingest", {})
        print(f"  ingest: {ingest.get('rows_added')} calls from {ingest.get('files_read')} files "
              f"in {ingest.get('seconds')} s; totals {ours['totals']['calls']} calls")

        if path is None or cc_argv is None:
            print(f"ccusage: skipped ({why})")
            return
        print(f"ccusage {why} daily --json --offline")
        cc_first, cc_med = cc_runs[0], _median(cc_runs)
        print(line("first run", cc_first))
        print(line(f"all runs (median of {len(cc_runs)})", cc_med) + _spread(cc_runs))
        cc_cold = cc_med

        print("same tokens per day and model (input, output, cache write, cache read):")
        for kind, source in (("claude", "claude-code-log"), ("codex", "codex-log")):
            cc = subprocess.run([path, kind, "daily", "--json", "--offline", "--timezone", "UTC"], env=env,
                                capture_output=True, text=True, timeout=3600)
            theirs = parse_ccusage(kind, json.loads(cc.stdout))
            mine = loopmeter_daily(ours, source)
            if not theirs and not mine:
                continue
            same = mine == theirs
            print(f"  {kind:<7} {'identical' if same else 'DIFFERENT'} over {len(mine)} (day, model) pairs")
            if not same:
                for k in sorted(set(mine) | set(theirs)):
                    if mine.get(k) != theirs.get(k):
                        print(f"    {k}: loopmeter {mine.get(k)} ccusage {theirs.get(k)}")
        print(f"loopmeter cold vs ccusage (medians): {float(cc_cold['wall_s']) / float(cold['wall_s']):.2f}x "
              f"(above 1: loopmeter faster); loopmeter warm vs ccusage: "
              f"{float(cc_cold['wall_s']) / float(warm['wall_s']):.1f}x")
        wins = sum(float(a["wall_s"]) < float(b["wall_s"]) for a, b in zip(colds, cc_runs, strict=True))
        print(f"paired runs (each cold run against the ccusage run after it): loopmeter faster in {wins} of "
              f"{len(colds)}")
    finally:
        dbs.drop_all()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
