"""`--sandbox none` on a real Ray worker: what a cell's unsandboxed command started does not outlive
the worker, whether the worker is SIGKILLed or its task is force-cancelled (Ray then SIGKILLs the
worker's direct children itself, so the runner's reaper must not be the one that holds the tree).

One driver process starts a local one-node Ray instance of its own (`address="local"`, never a
cluster that happens to run on the machine) and runs each case in turn; the control runs the same
command with a plain `subprocess.Popen(start_new_session=True)` and its grandchild survives.
Marked `ray`; skipped without the `loopmeter[ray]` extra.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

pytestmark = pytest.mark.ray

DRIVER = r"""
import json, os, signal, sys, time
from pathlib import Path
import ray

ORPHAN = "echo $$ > command.pid; (setsid sleep 300 & echo $! > grandchild.pid); echo started; sleep 300"

@ray.remote(max_retries=0)
def cell(workdir, how):
    if how == "plain":
        import subprocess
        subprocess.run(["sh", "-c", ORPHAN], cwd=workdir, start_new_session=True)
    else:
        from loopmeter.policies import load_policy
        from loopmeter.sandbox import make_runner
        make_runner("none").run(["sh", "-c", ORPHAN], workdir=Path(workdir), policy=load_policy("strict"),
                                role="check", actor="user", timeout_s=600)

def start_time(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else int(fields[19])

ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
for case in sys.argv[2:]:
    how, action = case.split("-")
    workdir = Path(sys.argv[1]) / case
    workdir.mkdir()
    ref = cell.remote(str(workdir), how)
    deadline = time.monotonic() + 60
    pid_file = workdir / "grandchild.pid"
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the cell never started its command"
        time.sleep(0.02)
    grandchild, command = int((workdir / "grandchild.pid").read_text()), int((workdir / "command.pid").read_text())
    started = start_time(grandchild)
    if action == "kill":  # the worker: the command's nearest ancestor titled ray::cell
        pid = command
        while not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::cell"):
            pid = int(Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[1])
        os.kill(pid, signal.SIGKILL)
    else:
        ray.cancel(ref, force=True)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and start_time(grandchild) == started:
        time.sleep(0.02)
    print(json.dumps({"case": case, "survived": start_time(grandchild) == started,
                      "pids": [grandchild, command]}), flush=True)
ray.shutdown()
"""


def test_a_killed_or_cancelled_ray_worker_takes_the_unsandboxed_commands_tree_with_it(tmp_path: Path) -> None:
    from loopmeter.executors.ray_executor import NODE_ENV

    cases = ["plain-kill", "loopmeter-kill", "loopmeter-cancel"]
    env = {**os.environ, **NODE_ENV}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), *cases], capture_output=True, text=True,
                         timeout=300, env=env)
    results = {r["case"]: r for r in map(json.loads, [line for line in out.stdout.splitlines()
                                                     if line.startswith("{")])}
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        assert results["plain-kill"]["survived"]  # the control: a new session alone does not do it
        assert not results["loopmeter-kill"]["survived"]
        assert not results["loopmeter-cancel"]["survived"]
    finally:
        for r in results.values():
            for pid in r["pids"]:
                for kill in (os.kill, os.killpg):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
