"""Start-up speed of the CLI, in fresh processes, and the heavy modules that
`import loopmeter.cli` loads (there should be none).

- warm: `--help` of the root and of every command (the bytecode cache in place);
- first start: `--help`, `usage --help` and `eval run --help` from a fresh copy
  of the loopmeter package, without its bytecode (as after an editable install or
  an update); the libraries keep the bytecode pip wrote when installing them;
- `doctor --json`, warm.

Target: every `--help` <= 200 ms median on the 2-core machine (issue 15).

    python benchmarks/startup.py [--runs 10] [--baseline DIR]

With `--baseline DIR` (a checkout of another version, e.g. from
`git archive REV loopmeter | tar -x -C DIR`) each sample runs that version and
this one back to back, both as `python -m loopmeter` from their own folder, and
the output counts the pairs this version won. Run it from outside the checkout.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ["litellm", "langgraph", "textual", "pandas", "sqlalchemy", "sqlmodel", "opentelemetry.sdk", "git", "httpx",
         "rich.markdown", "markdown_it"]
HERE = Path(__file__).resolve().parent.parent
FIRST_START = (["--help"], ["usage", "--help"], ["eval", "run", "--help"])


def command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as argv prefixes: [[], ["apply"], ["audit"], ["audit", "log"], ...]."""
    import typer.main

    from loopmeter.cli import app

    def walk(command, path: list[str]):
        yield path
        for name in command.list_commands(None) if hasattr(command, "list_commands") else []:
            yield from walk(command.get_command(None, name), [*path, name])

    return list(walk(typer.main.get_command(app), []))


def once(args: list[str], tree: Path, first_start: bool) -> tuple[float, float]:
    """Wall and CPU (user + system) time of one fresh `python -m loopmeter ARGS` run from TREE
    with a new LOOPMETER_HOME, in ms. CPU time moves less than wall time when the cores are shared."""
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, LOOPMETER_HOME=os.path.join(scratch, "home"))
        env.pop("PYTHONPATH", None)
        if first_start:
            shutil.copytree(tree / "loopmeter", Path(scratch, "loopmeter"), ignore=shutil.ignore_patterns("__pycache__"))
            tree = Path(scratch)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "loopmeter", *args], env=env, cwd=tree,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall * 1000, cpu * 1000


def measure(args: list[str], runs: int, baseline: Path | None, first_start: bool = False) -> str:
    ours, theirs = [], []
    for _ in range(runs):
        if baseline is not None:
            theirs.append(once(args, baseline, first_start))
        ours.append(once(args, HERE, first_start))
    wall, cpu = zip(*ours, strict=True)
    line = f"loopmeter {' '.join(args):<24} median {statistics.median(wall):5.0f} ms  " \
           f"min {min(wall):5.0f}  max {max(wall):5.0f}  cpu {statistics.median(cpu):5.0f}"
    if baseline is not None:
        base_wall, base_cpu = zip(*theirs, strict=True)
        won = sum(a < b for a, b in zip(wall, base_wall, strict=True))
        line += f"  | baseline median {statistics.median(base_wall):5.0f} ms  cpu {statistics.median(base_cpu):5.0f}" \
                f"; faster in {won} of {runs} pairs"
    return line


def heavy_modules() -> list[str]:
    code = "import sys, loopmeter.cli; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True).stdout
    mods = set(out.split())
    return sorted(h for h in HEAVY if h in mods)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--baseline", type=Path, help="a checkout of the version to compare with")
    ns = ap.parse_args()
    baseline = ns.baseline.resolve() if ns.baseline else None
    for tree in filter(None, (HERE, baseline)):
        once(["--help"], tree, first_start=False)  # write the bytecode cache, as an install would
    print(f"warm, {ns.runs} fresh processes each:")
    for path in command_paths():
        print(measure([*path, "--help"], ns.runs, baseline))
    print(f"first start (loopmeter without bytecode), {ns.runs} fresh processes each:")
    for args in FIRST_START:
        print(measure(list(args), ns.runs, baseline, first_start=True))
    print(measure(["doctor", "--json"], ns.runs, baseline))
    heavy = heavy_modules()
    print("heavy modules loaded by `import loopmeter.cli`:", ", ".join(heavy) if heavy else "none")


if __name__ == "__main__":
    main()
