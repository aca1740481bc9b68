"""Resource limits: a cgroup (v2, or v1 controllers) for processes, memory and CPU time, rlimits for the rest.

RLIMIT_NPROC is ignored for root and counts all the uid's processes on the host,
so the process limit comes from a cgroup's `pids.max` wherever one can be made.
RLIMIT_CPU is per process (four processes each under it run on), so `cpu_s` is also
watched on the cgroup's total (`cpu.stat usage_usec` on v2, `cpuacct.usage` on v1):
the runner's wait loop polls it and kills the whole cgroup when it passes the limit.
`disk_mb` bounds the worktree's size: checked after every command, and during it
whenever the filesystem has grown by more than the limit since the command started.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import stat
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    dirs: dict[str, Path] = field(default_factory=dict)  # "pids"/"memory"/"cpu" -> directory
    version: int = 0  # 2 when any directory is on the unified hierarchy, else 1
    name: str = ""  # the directories' common name, loopmeter-<12 hex>
    cpu_file: Path | None = None  # cpu.stat (v2, usage_usec) or cpuacct.usage (v1, ns)

    def cpu_seconds(self) -> float | None:
        """CPU time of every process that ran in the cgroup so far (exited ones included)."""
        f = self.cpu_file
        if f is None:
            return None
        try:
            text = f.read_text()
            if f.name == "cpuacct.usage":
                return int(text) / 1e9
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            pass
        return None

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

    def events(self) -> dict[str, Any]:
        """Limit hits: pids (fork refused), oom (memory kills); cpu_s (total CPU seconds) when measured."""
        ev: dict[str, Any] = {"pids": 0, "oom": 0}
        pids_dir, mem_dir = self.dirs.get("pids"), self.dirs.get("memory")
        if pids_dir is not None:
            ev["pids"] = _read_key(pids_dir / "pids.events", "max")
        if mem_dir is not None:
            if (mem_dir / "memory.events").exists():
                ev["oom"] = _read_key(mem_dir / "memory.events", "oom_kill")
            else:
                ev["oom"] = _read_key(mem_dir / "memory.oom_control", "oom_kill")
        used = self.cpu_seconds()
        if used is not None:
            ev["cpu_s"] = round(used, 3)
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
    """A cgroup with pids / memory limits set and CPU time accounted, or None where none can be made
    (then rlimits only). On a hybrid machine the unified hierarchy is used only for controllers it holds;
    the rest come from the v1 hierarchies."""
    want_pids, want_mem, want_cpu = limits.pids is not None, limits.memory_mb is not None, limits.cpu_s is not None
    if not (want_pids or want_mem or want_cpu):
        return None
    if os.environ.get("LOOPMETER_SANDBOX_CGROUP") == "0":  # opt out, e.g. to test the rlimit-only path
        return None
    name = f"loopmeter-{uuid.uuid4().hex[:12]}"
    own = _own_paths()
    v2 = _v2_root()
    cg = Cgroup(name=name)
    if v2 is not None and "" in own:
        parent = v2 / own[""].lstrip("/")
        wanted = [c for c, w in (("pids", want_pids), ("memory", want_mem)) if w]
        controllers = _subtree_controllers(parent)
        if wanted and not set(wanted) <= set(controllers):
            # works where the parent holds no processes itself (e.g. the root cgroup)
            _try_write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
            controllers = _subtree_controllers(parent)
        usable = [c for c in wanted if c in controllers]
        # cpu.stat exists in every v2 cgroup, controller or not; where v1 mounts cpuacct, that one counts
        cpu_here = want_cpu and "cpuacct" not in own
        if usable or cpu_here:
            d = _try_mkdir(parent, name)
            if d is not None:
                cg.version = 2
                if "pids" in usable and limits.pids is not None:
                    (d / "pids.max").write_text(str(limits.pids))
                    cg.dirs["pids"] = d
                if "memory" in usable and limits.memory_mb is not None:
                    (d / "memory.max").write_text(str(limits.memory_mb * 1024 * 1024))
                    _try_write(d / "memory.swap.max", "0")
                    cg.dirs["memory"] = d
                if want_cpu and (d / "cpu.stat").is_file():
                    cg.dirs["cpu"], cg.cpu_file = d, d / "cpu.stat"
                if not cg.dirs:
                    d.rmdir()
                    cg.version = 0
    if want_pids and "pids" not in cg.dirs and "pids" in own:
        d = _try_mkdir(_v1_root("pids") / own["pids"].lstrip("/"), name)
        if d is not None:
            (d / "pids.max").write_text(str(limits.pids))
            cg.dirs["pids"] = d
    if want_mem and "memory" not in cg.dirs and "memory" in own and limits.memory_mb is not None:
        d = _try_mkdir(_v1_root("memory") / own["memory"].lstrip("/"), name)
        if d is not None:
            (d / "memory.limit_in_bytes").write_text(str(limits.memory_mb * 1024 * 1024))
            _try_write(d / "memory.memsw.limit_in_bytes", str(limits.memory_mb * 1024 * 1024))
            cg.dirs["memory"] = d
    if want_cpu and "cpu" not in cg.dirs and "cpuacct" in own:
        d = _try_mkdir(_v1_root("cpuacct") / own["cpuacct"].lstrip("/"), name)
        if d is not None:
            cg.dirs["cpu"], cg.cpu_file = d, d / "cpuacct.usage"
    if not cg.dirs:
        return None
    cg.version = cg.version or 1
    return cg


def _v1_root(controller: str) -> Path:
    """The v1 hierarchy holding `controller`: its own mount, or a co-mount such as cpu,cpuacct."""
    plain = CGROUP_ROOT / controller
    if plain.is_dir():
        return plain
    try:
        for entry in CGROUP_ROOT.iterdir():
            if controller in entry.name.split(","):
                return entry
    except OSError:
        pass
    return plain


def cgroup_report() -> dict[str, Any]:
    """For the doctors: which cgroup limits this machine can give a sandbox (a test cgroup is made and removed)."""
    off = os.environ.get("LOOPMETER_SANDBOX_CGROUP") == "0"
    cg = make_cgroup(Limits(cpu_s=1, memory_mb=64, pids=8))
    kinds = sorted(cg.dirs) if cg is not None else []
    version = cg.version if cg is not None else None
    if cg is not None:
        cg.remove()
    missing = [k for k in ("cpu", "memory", "pids") if k not in kinds]
    if not kinds:
        why = "LOOPMETER_SANDBOX_CGROUP=0" if off else "no writable cgroup here"
        text = f"no cgroup can be made ({why}): CPU, memory and process limits are per process only"
    else:
        text = f"cgroup v{version} per command: " + ", ".join(
            {"cpu": "CPU time of all processes together", "memory": "memory", "pids": "process count"}[k]
            for k in kinds)
        if missing:
            text += f"; per process only: {', '.join(missing)}"
    hint = None
    if missing:
        hint = ("run loopmeter as root, or inside a cgroup delegated to your user "
                "(systemd-run --user --scope -p Delegate=yes loopmeter ...)" if not off
                else "unset LOOPMETER_SANDBOX_CGROUP")
    return {"version": version, "limits": kinds, "per_process_only": missing, "text": text, "hint": hint}


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


# -- watching during a command ----------------------------------------------------------


def _fs_used(paths: Sequence[Path]) -> int:
    """Bytes in use on the filesystems holding `paths` (each filesystem once); statvfs, microseconds."""
    total, seen = 0, set()
    for p in paths:
        try:
            dev = os.stat(p).st_dev
            if dev in seen:
                continue
            seen.add(dev)
            st = os.statvfs(p)
        except OSError:
            continue
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


def tree_bytes(paths: Sequence[Path]) -> int:
    """Disk space the trees under `paths` take (allocated blocks, so sparse files count what they use):
    symlinks not followed, other filesystems not entered, hard links counted once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root in paths:
        try:
            dev = os.lstat(root).st_dev
        except OSError:
            continue
        stack = [str(root)]
        while stack:
            try:
                it = os.scandir(stack.pop())
            except OSError:
                continue
            with it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_dev != dev:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                    elif st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


class DiskQuota:
    """`limits.disk_mb` on the worktree (and any other writable bind). There is no cheap kernel quota for
    a plain directory (docs/security.md), so: during the command a statvfs of its filesystem every poll
    (microseconds); only when that has grown by more than the limit is the tree walked; after the command
    the tree is always walked (about 8 ms per 1,000 files)."""

    def __init__(self, paths: Sequence[Path], limit_mb: int):
        self.paths = [Path(p) for p in paths]
        self.limit = limit_mb * 1024 * 1024
        self.base = _fs_used(self.paths)
        self.used: int | None = None

    def over_during(self) -> bool:
        now = _fs_used(self.paths)
        if now - self.base <= self.limit:
            return False
        self.base = now  # grown by others, or by us: walk once per limit's worth of growth
        return self.measure() > self.limit

    def measure(self) -> int:
        self.used = tree_bytes(self.paths)
        return self.used


def limit_watch(limits: Limits, cgroup: Cgroup | None, disk: DiskQuota | None) -> Callable[[], str | None] | None:
    """What the runner's wait loop calls every poll: "cpu" when the cgroup's CPU total passed `cpu_s`,
    "disk" when the worktree passed `disk_mb`, else None. None (no polling at all) when nothing is watched."""
    cpu_limit = limits.cpu_s if cgroup is not None and cgroup.cpu_file is not None else None
    if cpu_limit is None and disk is None:
        return None

    def watch() -> str | None:
        if cpu_limit is not None and cgroup is not None:
            used = cgroup.cpu_seconds()
            if used is not None and used >= cpu_limit:
                return "cpu"
        if disk is not None and disk.over_during():
            return "disk"
        return None

    return watch


def doctor_report() -> dict[str, Any]:
    """`loopmeter doctor`'s `limits` entry: the cgroup limits this machine gives a sandbox, and whether a
    child killed at the file-size limit can be seen (kernel process events)."""
    from loopmeter.sandbox.exitwatch import probe

    report = cgroup_report()
    seen, note = probe()
    return {**report, "child_file_size_kills": seen, "child_file_size_note": note}
