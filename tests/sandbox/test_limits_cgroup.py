"""Limits that hold across processes, against real bubblewrap sandboxes and real cgroups:

- `limits.cpu_s` on the CPU time of every process in the sandbox together (the per-command cgroup),
  not only per process (RLIMIT_CPU);
- a process killed by SIGXFSZ anywhere in the tree is recorded, even when its parent carries on;
- `limits.disk_mb` on the worktree's size.

Assertions are on CPU consumed and on what was recorded, with wide margins; never on wall time.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from loopmeter.policies import parse_policy
from loopmeter.policies.schema import Limits
from loopmeter.sandbox.limits import DiskQuota, limit_watch, make_cgroup, tree_bytes
from loopmeter.store import Audit

CHECK = {"role": "check", "actor": "check"}

# burns CPU until its own CPU time reaches LIMIT, writing how far it got every 50 ms of CPU
BURNER = """\
import os, sys, time
name, limit = sys.argv[1], float(sys.argv[2])
nxt = 0.05
while True:
    t = time.process_time()
    if t >= nxt:
        with open(".cpu-" + name, "w") as f:
            f.write(repr(t))
        os.replace(".cpu-" + name, "cpu-" + name)  # a kill mid-write leaves the last whole value
        nxt += 0.05
    if t >= limit:
        break
with open("done-" + name, "w") as f:
    f.write("done")
"""


def _audit_rows(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(Audit.__table__).order_by(Audit.__table__.c.seq))]


def _need_cpu_cgroup() -> None:
    cg = make_cgroup(Limits(cpu_s=2, memory_mb=None, pids=None))
    if cg is None or cg.cpu_file is None:
        if cg is not None:
            cg.remove()
        pytest.skip("no cgroup with CPU accounting can be made here (no writable cpuacct v1 hierarchy or v2 "
                    "cgroup): cpu_s is per process only, which test_limits.py covers")
    cg.remove()


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _burners(workdir: Path, n: int, each_s: float, marker: str) -> list[str]:
    (workdir / "burn.py").write_text(BURNER)
    starts = " ".join(f"python3 -I -S burn.py {i} {each_s} {marker} &" for i in range(n))
    return ["sh", "-c", f"{starts} wait; echo all-done"]


def test_four_processes_each_under_cpu_s_are_killed_at_the_total(runner, store, workdir: Path,
                                                                  tmp_path: Path) -> None:
    _need_cpu_cgroup()
    policy = parse_policy("name: cpu2\nlimits: {cpu_s: 2, wall_s: 120}\n", tmp_path / "cpu2.yaml")
    marker = f"lm-burn-{uuid.uuid4().hex[:8]}"
    # each burner stops by itself at 1.5 s of CPU (under cpu_s = 2, so RLIMIT_CPU never fires): 6 s together
    res = runner.run(_burners(workdir, 4, 1.5, marker), workdir=workdir, policy=policy, **CHECK)

    assert res.killed_reason == "cpu", (res.exit_code, res.stdout, res.stderr)
    assert "all-done" not in res.stdout
    assert not list(workdir.glob("done-*")), "a burner reached its own 1.5 s: the total was not enforced"
    # what the burners themselves saw (a lower bound, 50 ms of CPU behind each): they ran, and were stopped
    # near the 2 s total, far below the 6 s they would have used together
    seen = {p.name: float(p.read_text()) for p in workdir.glob("cpu-*")}
    assert len(seen) == 4 and sum(seen.values()) >= 1.0, seen
    assert sum(seen.values()) <= 4.0, seen

    rows = [r for r in _audit_rows(store) if r["rule_id"] == "limits.cpu_s"]
    assert len(rows) == 1 and rows[0]["layer"] == "limit" and rows[0]["decision"] == "deny"
    detail = json.loads(rows[0]["detail"])
    assert detail["scope"] == "sandbox"
    assert 2.0 <= detail["cpu_used_s"] <= 4.0, detail  # the cgroup's total when it was killed
    assert any(d["rule_id"] == "limits.cpu_s" for d in res.denials)

    deadline = time.monotonic() + 10  # SIGKILLed processes take a moment to go; not an assertion on time
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == []


def test_processes_under_the_cpu_total_finish(runner, store, workdir: Path, tmp_path: Path) -> None:
    _need_cpu_cgroup()
    policy = parse_policy("name: cpu2\nlimits: {cpu_s: 2, wall_s: 120}\n", tmp_path / "cpu2.yaml")
    res = runner.run(_burners(workdir, 4, 0.15, f"lm-burn-{uuid.uuid4().hex[:8]}"), workdir=workdir,
                     policy=policy, **CHECK)
    assert res.exit_code == 0 and res.killed_reason is None, (res.stdout, res.stderr)
    assert "all-done" in res.stdout and len(list(workdir.glob("done-*"))) == 4
    assert not [r for r in _audit_rows(store) if r["rule_id"] == "limits.cpu_s"]


def test_without_cpu_s_nothing_is_accounted_or_polled() -> None:
    limits = Limits(cpu_s=None, memory_mb=None, pids=64)
    cg = make_cgroup(limits)
    try:
        assert cg is None or ("cpu" not in cg.dirs and cg.cpu_file is None)
        assert limit_watch(limits, cg, None) is None
    finally:
        if cg is not None:
            cg.remove()


# -- file size: a child killed by SIGXFSZ --------------------------------------------------


def _need_exit_events() -> None:
    from loopmeter.sandbox.exitwatch import probe

    ok, why = probe()
    if not ok:
        pytest.skip(why)


def _file_size_rows(store) -> list[dict]:
    return [r for r in _audit_rows(store) if r["rule_id"] == "limits.file_size_mb"]


def test_a_grandchild_killed_by_the_file_size_limit_is_recorded_while_the_parent_goes_on(
        runner, store, workdir: Path, tmp_path: Path) -> None:
    _need_exit_events()
    policy = parse_policy("name: fs\nlimits: {file_size_mb: 1}\n", tmp_path / "fs.yaml")
    script = "dd if=/dev/zero of=big.bin bs=64k count=64 2>/dev/null; echo dd-exit=$?; echo parent-went-on"
    res = runner.run(["sh", "-c", script], workdir=workdir, policy=policy, **CHECK)

    assert res.exit_code == 0 and "dd-exit=153" in res.stdout and "parent-went-on" in res.stdout, res.stdout
    assert (workdir / "big.bin").stat().st_size == 1024 * 1024
    assert res.killed_reason is None, res.denials  # the command itself was not killed
    rows = _file_size_rows(store)
    assert len(rows) == 1 and rows[0]["decision"] == "deny" and rows[0]["layer"] == "limit"
    assert json.loads(rows[0]["detail"])["processes"] in (["dd"], ["?"])  # "?" once the zombie was reaped
    assert any(d["rule_id"] == "limits.file_size_mb" for d in res.denials)


def test_file_size_kills_deeper_in_the_tree_and_orphans_are_recorded(runner, store, workdir: Path,
                                                                     tmp_path: Path) -> None:
    _need_exit_events()
    policy = parse_policy("name: fs\nlimits: {file_size_mb: 1}\n", tmp_path / "fs.yaml")
    write = "head -c 2000000 /dev/zero > {}"
    # a great-grandchild under a shell that survives it, and an orphan (its parent gone before it dies)
    script = (f"sh -c '{write.format('deep.bin')}; true'; "
              f"( sh -c 'echo $$ > orphan.pid; exec {write.format('orphan.bin')}' & ); "
              "while [ ! -s orphan.pid ]; do sleep 0.01; done; "
              "while kill -0 $(cat orphan.pid) 2>/dev/null; do sleep 0.01; done; echo finished")
    res = runner.run(["sh", "-c", script], workdir=workdir, policy=policy, **CHECK)
    assert res.exit_code == 0 and "finished" in res.stdout, (res.stdout, res.stderr)
    rows = _file_size_rows(store)
    assert len(rows) == 1
    assert len(json.loads(rows[0]["detail"])["processes"]) == 2


def test_a_command_that_writes_under_the_file_size_limit_records_nothing(runner, store, workdir: Path,
                                                                         tmp_path: Path) -> None:
    policy = parse_policy("name: fs\nlimits: {file_size_mb: 1}\n", tmp_path / "fs.yaml")
    res = runner.run(["sh", "-c", "head -c 1000 /dev/zero > small.bin; sh -c 'exit 3'; echo ok"], workdir=workdir,
                     policy=policy, **CHECK)
    assert res.exit_code == 0 and res.stdout == "ok\n"
    assert _file_size_rows(store) == [] and res.denials == []


def test_a_sigxfsz_death_in_another_sandbox_is_not_attributed_to_this_one(runner, store, workdir: Path,
                                                                           tmp_path: Path) -> None:
    _need_exit_events()
    import subprocess

    policy = parse_policy("name: fs\nlimits: {file_size_mb: 1}\n", tmp_path / "fs.yaml")
    # while this sandbox runs, a process outside it (on the host) dies of SIGXFSZ
    host = subprocess.Popen(["sh", "-c", f"sleep 0.3; ulimit -f 0; echo x > {tmp_path}/host.bin"])
    res = runner.run(["sh", "-c", "sleep 1; echo ok"], workdir=workdir, policy=policy, **CHECK)
    assert host.wait() == -25
    assert res.exit_code == 0 and _file_size_rows(store) == []


def test_parallel_sandboxes_each_get_only_their_own_file_size_kills(runner, store, tmp_path: Path) -> None:
    _need_exit_events()
    import threading

    policy = parse_policy("name: fs\nlimits: {file_size_mb: 1}\n", tmp_path / "fs.yaml")
    results: dict[str, object] = {}

    def go(name: str, script: str) -> None:
        work = tmp_path / name
        work.mkdir()
        results[name] = runner.run(["sh", "-c", script], workdir=work, policy=policy, attempt_id=name, **CHECK)

    kill3 = "for i in 1 2 3; do head -c 2000000 /dev/zero > f$i; done; sleep 0.5; echo ok"
    quiet = "for i in 1 2 3; do head -c 1000 /dev/zero > f$i; sleep 0.2; done; echo ok"
    threads = [threading.Thread(target=go, args=("noisy", kill3)), threading.Thread(target=go, args=("quiet", quiet))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    noisy, quiet_res = results["noisy"], results["quiet"]
    assert [d["rule_id"] for d in noisy.denials] == ["limits.file_size_mb"]  # type: ignore[attr-defined]
    assert quiet_res.denials == []  # type: ignore[attr-defined]
    rows = _file_size_rows(store)
    assert [r["attempt_id"] for r in rows] == ["noisy"]
    assert len(json.loads(rows[0]["detail"])["processes"]) == 3


# -- disk: the worktree's size --------------------------------------------------------------


def test_disk_limit_fails_the_step_after_the_command(runner, store, workdir: Path, tmp_path: Path) -> None:
    policy = parse_policy("name: disk\nlimits: {disk_mb: 2, file_size_mb: 1}\n", tmp_path / "disk.yaml")
    # three files, each within the per-file limit, together over the worktree's 2 MiB
    res = runner.run(["sh", "-c", "for f in a b c; do head -c 1000000 /dev/zero > $f.bin; done; echo wrote"],
                     workdir=workdir, policy=policy, **CHECK)
    assert "wrote" in res.stdout
    assert res.killed_reason == "disk" and res.exit_code != 0
    rows = [r for r in _audit_rows(store) if r["rule_id"] == "limits.disk_mb"]
    assert len(rows) == 1 and json.loads(rows[0]["detail"])["bytes"] > 2 * 1024 * 1024

    ok = parse_policy("name: disk\nlimits: {disk_mb: 8}\n", tmp_path / "disk8.yaml")
    fine = runner.run(["sh", "-c", "echo small > s.txt"], workdir=workdir, policy=ok, **CHECK)
    assert fine.exit_code == 0 and fine.killed_reason is None


def test_disk_limit_stops_a_command_that_keeps_writing(runner, store, workdir: Path, tmp_path: Path) -> None:
    policy = parse_policy("name: disk\nlimits: {disk_mb: 4, wall_s: 120}\n", tmp_path / "disk.yaml")
    # writes 64 MiB in 1 MiB files (fsync'd, so the filesystem counts them), then would idle for two minutes
    script = ("i=0; while [ $i -lt 64 ]; do head -c 1048576 /dev/urandom > f$i.bin; i=$((i+1)); done; sync; "
              "sleep 100; echo not-stopped")
    res = runner.run(["sh", "-c", script], workdir=workdir, policy=policy, **CHECK)
    assert res.killed_reason == "disk" and "not-stopped" not in res.stdout, (res.exit_code, res.stderr)
    assert not res.timed_out
    assert any(d["rule_id"] == "limits.disk_mb" for d in res.denials)


def test_tree_bytes_counts_hard_links_once_and_does_not_follow_symlinks(tmp_path: Path) -> None:
    d = tmp_path / "t"
    d.mkdir()
    (d / "a").write_bytes(os.urandom(100_000))
    os.link(d / "a", d / "b")
    (d / "link").symlink_to("/usr")
    one = tree_bytes([d])
    assert 100_000 <= one < 200_000
    assert DiskQuota([d], 1).measure() == one


# -- what the doctors say ---------------------------------------------------------------------


def test_doctor_says_plainly_when_no_cgroup_can_be_made(monkeypatch) -> None:
    from loopmeter.sandbox.limits import cgroup_report

    monkeypatch.setenv("LOOPMETER_SANDBOX_CGROUP", "0")
    off = cgroup_report()
    assert off["limits"] == [] and off["per_process_only"] == ["cpu", "memory", "pids"]
    assert "per process only" in off["text"] and off["hint"]
    monkeypatch.delenv("LOOPMETER_SANDBOX_CGROUP")
    on = cgroup_report()
    if not on["limits"]:
        pytest.skip("no writable cgroup here")
    assert on["text"].startswith("cgroup v")
    if "cpu" in on["limits"]:
        assert "CPU time of all processes together" in on["text"]


def test_cpu_totals_are_read_in_both_cgroup_formats(tmp_path: Path) -> None:
    from loopmeter.sandbox.limits import Cgroup

    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")  # v2
    (tmp_path / "cpuacct.usage").write_text("1750000000\n")  # v1, nanoseconds
    assert Cgroup(cpu_file=tmp_path / "cpu.stat").cpu_seconds() == 2.5
    assert Cgroup(cpu_file=tmp_path / "cpuacct.usage").cpu_seconds() == 1.75
    assert Cgroup(cpu_file=tmp_path / "missing").cpu_seconds() is None
