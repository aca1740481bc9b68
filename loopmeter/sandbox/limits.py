"""Resource limits: a cgroup (v2, or v1 controllers) for processes and memory, rlimits for the rest.

RLIMIT_NPROC is ignored for root and counts all the uid's processes on the host,
so the process limit comes from a cgroup's `pids.max` wherever one can be made.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from loopmeter.policies.schema import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """controller ('' for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    except OSError:
        pass
    return out


def _v2_root() -> Path | None:
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        return CGROUP_ROOT
    if (CGROUP_ROOT / "unified" / "cgroup.controllers").is_file():
        return CGROUP_ROOT / "unified"
    return None


@dataclass
class Cgroup:
    """One cgroup per sandboxed command: joined by the launcher, killed and removed at the end."""

    dirs: dict[str, Path] = field(default_factory=dict)  # "pids"/"memory" -> directory
    version: int = 0

    @property
    def procs_files(self) -> list[str]:
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def pids(self) -> set[int]:
        found: set[int] = set()
        for f in self.procs_files:
            try:
                found.update(int(x) for x in Path(f).read_text().split())
            except (OSError, ValueError):
                pass
        return found

    def kill_all(self, wait: bool = True) -> None:
        """SIGKILL everything in the cgroup; with `wait`, until it is empty."""
        for d in set(self.dirs.values()):
            if (d / "cgroup.kill").exists():
                try:
                    (d / "cgroup.kill").write_text("1")
                except OSError:
                    pass
        for i in range(500):
            left = self.pids()
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if not wait:
                return
            time.sleep(0.001 if i < 100 else 0.01)

    def events(self) -> dict[str, int]:
        """Limit hits: pids (fork refused), oom (memory kills)."""
        ev = {"pids": 0, "oom": 0}
        pids_dir, mem_dir = self.dirs.get("pids"), self.dirs.get("memory")
        if pids_dir is not None:
            ev["pids"] = _read_key(pids_dir / "pids.events", "max")
        if mem_dir is not None:
            if self.version == 2:
                ev["oom"] = _read_key(mem_dir / "memory.events", "oom_kill")
            else:
                ev["oom"] = _read_key(mem_dir / "memory.oom_control", "oom_kill")
        return ev

    def remove(self, background: bool = False) -> None:
        """Kill what is left and remove the directories. A pid namespace's teardown takes a few ms
        after bubblewrap exits; `background` waits for it off the caller's path."""
        if background:
            t = threading.Thread(target=self.remove, name="lm-cgroup-reaper", daemon=True)
            with _reapers_lock:
                _reapers.add(t)
            t.start()
            return
        self.kill_all()
        for d in sorted(set(self.dirs.values()), reverse=True):
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
        with _reapers_lock:
            _reapers.discard(threading.current_thread())


_reapers: set[threading.Thread] = set()
_reapers_lock = threading.Lock()


@atexit.register
def _join_reapers() -> None:
    with _reapers_lock:
        pending = list(_reapers)
    for t in pending:
        t.join(timeout=2)


def _read_key(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except (OSError, ValueError):
        pass
    return 0


def _try_mkdir(parent: Path, name: str) -> Path | None:
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        return None
    d = parent / name
    try:
        d.mkdir()
    except OSError:
        return None
    return d


def make_cgroup(limits: Limits) -> Cgroup | None:
    """A cgroup with pids.max / memory limits set, or None where none can be made (then rlimits only)."""
    if limits.pids is None and limits.memory_mb is None:
        return None
    if os.environ.get("LOOPMETER_SANDBOX_CGROUP") == "0":  # opt out, e.g. to test the rlimit-only path
        return None
    name = f"loopmeter-{uuid.uuid4().hex[:12]}"
    own = _own_paths()
    v2 = _v2_root()
    cg = Cgroup()
    if v2 is not None and "" in own:
        parent = v2 / own[""].lstrip("/")
        controllers = _subtree_controllers(parent)
        if not {"pids", "memory"} <= set(controllers):
            # works where the parent holds no processes itself (e.g. the root cgroup)
            _try_write(parent / "cgroup.subtree_control", "+pids +memory")
            controllers = _subtree_controllers(parent)
        if "pids" in controllers or "memory" in controllers:
            d = _try_mkdir(parent, name)
            if d is not None:
                cg.version = 2
                if "pids" in controllers and limits.pids is not None:
                    (d / "pids.max").write_text(str(limits.pids))
                    cg.dirs["pids"] = d
                if "memory" in controllers and limits.memory_mb is not None:
                    (d / "memory.max").write_text(str(limits.memory_mb * 1024 * 1024))
                    _try_write(d / "memory.swap.max", "0")
                    cg.dirs["memory"] = d
                if not cg.dirs:
                    d.rmdir()
                    return None
                return cg
    cg.version = 1
    if limits.pids is not None and "pids" in own:
        d = _try_mkdir(CGROUP_ROOT / "pids" / own["pids"].lstrip("/"), name)
        if d is not None:
            (d / "pids.max").write_text(str(limits.pids))
            cg.dirs["pids"] = d
    if limits.memory_mb is not None and "memory" in own:
        d = _try_mkdir(CGROUP_ROOT / "memory" / own["memory"].lstrip("/"), name)
        if d is not None:
            (d / "memory.limit_in_bytes").write_text(str(limits.memory_mb * 1024 * 1024))
            _try_write(d / "memory.memsw.limit_in_bytes", str(limits.memory_mb * 1024 * 1024))
            cg.dirs["memory"] = d
    return cg if cg.dirs else None


def _subtree_controllers(parent: Path) -> list[str]:
    try:
        return (parent / "cgroup.subtree_control").read_text().split()
    except OSError:
        return []


def _try_write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass


def launcher_argv(limits: Limits, cgroup: Cgroup | None) -> list[str]:
    """argv prefix that joins the cgroup and sets rlimits, then execs the rest: one `sh` (about 1 ms).

    POSIX sh units: `ulimit -t` seconds, `-f` 512-byte blocks, `-d` KiB.
    """
    steps: list[str] = []
    if cgroup is not None:
        steps.append('p=$$; while [ "$1" != -- ]; do echo $p > "$1" || exit 125; shift; done; shift')
    if limits.cpu_s is not None:
        steps.append(f"ulimit -S -t {limits.cpu_s} && ulimit -H -t {limits.cpu_s + 2} || exit 125")
    if limits.file_size_mb is not None:
        steps.append(f"ulimit -f {limits.file_size_mb * 2048} || exit 125")
    has_mem = cgroup is not None and "memory" in cgroup.dirs
    if limits.memory_mb is not None and not has_mem:
        steps.append(f"ulimit -d {limits.memory_mb * 1024} || exit 125")
    prefix: list[str] = []
    if steps:
        script = "; ".join([*steps, 'exec "$@"'])
        # the cgroup loop consumes its files up to the "--" marker; without it "$@" is the command itself
        prefix = ["/bin/sh", "-c", script, "sh", *([*cgroup.procs_files, "--"] if cgroup is not None else [])]
    has_pids = cgroup is not None and "pids" in cgroup.dirs
    prlimit = shutil.which("prlimit")
    if limits.pids is not None and not has_pids and os.geteuid() != 0 and prlimit:
        # sh's ulimit has no portable process-count flag
        prefix += [prlimit, f"--nproc={limits.pids + _user_process_count()}", "--"]
    return prefix


def _user_process_count() -> int:
    uid, n = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n
