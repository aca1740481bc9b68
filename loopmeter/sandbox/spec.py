"""Policy + call -> a deterministic bubblewrap argv (no secrets in it: they travel through --args FD)."""

from __future__ import annotations

import glob
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from loopmeter.hostgit import GitLayout
from loopmeter.policies.policy import Policy

PROXY_PORT = 3128
SANDBOX_UID = 1000
SANDBOX_RUN = "/run/loopmeter"
SYSTEM_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]


@dataclass
class SandboxSpec:
    workdir: Path
    policy: Policy
    home: Path  # HOME inside (a tmpfs unless `home_bind`)
    home_bind: bool = False
    env: dict[str, str] = field(default_factory=dict)  # everything but secrets
    proxy_dir: Path | None = None  # host dir holding proxy.sock
    forwards: list[str] = field(default_factory=list)  # local endpoints bridged inside
    extra_ro: list[Path] = field(default_factory=list)
    extra_rw: list[Path] = field(default_factory=list)
    data_dirs: list[Path] = field(default_factory=list)
    hide_extra: list[Path] = field(default_factory=list)  # e.g. LOOPMETER_HOME
    empty_file: Path | None = None  # an empty read-only file used to hide files
    git: GitLayout | None = None  # the workdir's git layout, checked by loopmeter (see loopmeter.hostgit)


def host_home() -> Path:
    """The caller's home, covered by a tmpfs inside (a home of "/" would cover everything)."""
    home = Path(os.path.expanduser("~")).resolve()
    return home if home != Path("/") else Path("/home/sandbox")


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@lru_cache(maxsize=1)
def toolchain_dirs() -> tuple[str, ...]:
    """Python (this interpreter and its venv) and node, when they live outside /usr."""
    found: list[str] = []
    for p in (sys.base_prefix, sys.prefix):
        found.append(os.path.realpath(p))
    node = shutil.which("node")
    if node:
        found.append(str(Path(os.path.realpath(node)).parent.parent))
    return tuple(dict.fromkeys(d for d in found if not d.startswith(("/usr/", "/bin", "/lib"))))


@lru_cache(maxsize=1)
def inner_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else os.path.realpath(sys.executable)


def inner_path() -> str:
    extra = [f"{sys.prefix}/bin"] if sys.prefix != sys.base_prefix else []
    node = shutil.which("node")
    if node and not node.startswith(("/usr/", "/bin")):
        extra.append(str(Path(node).parent))
    return ":".join(dict.fromkeys([*extra, *SYSTEM_PATH]))


def expand(entry: str, spec: SandboxSpec) -> list[Path]:
    if entry == "{python}" or entry == "{node}":
        return [Path(d) for d in toolchain_dirs()]
    if entry == "{worktree}":
        return [spec.workdir]
    if entry == "{data}":
        return list(spec.data_dirs)
    path = os.path.expanduser(entry) if entry.startswith("~") else entry
    if "*" in path or "?" in path:
        return [Path(p) for p in sorted(glob.glob(path))]
    return [Path(path)]


def git_binds(spec: SandboxSpec) -> list[str]:
    """The workdir's `.git` (file or folder) read-only, and for a linked worktree the
    repository's git dir read-only too (config, hooks, info, commondir, every worktree's
    gitdir pointer). Which folders come from `spec.git`, a layout loopmeter checked
    before the sandbox started; a `.git` that is a link is never a bind source."""
    dotgit = spec.workdir / ".git"
    args: list[str] = []
    if spec.git is not None and spec.git.linked:
        args += ["--ro-bind", str(spec.git.common_dir), str(spec.git.common_dir)]
    if os.path.lexists(dotgit) and not os.path.islink(dotgit):
        args += ["--ro-bind", str(dotgit), str(dotgit)]
    return args


def bwrap_argv(spec: SandboxSpec, command: Sequence[str], bwrap: str = "bwrap",
               secret_fd: int | None = None) -> list[str]:
    fs = spec.policy.model.filesystem
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
            "--hostname", "sandbox"]
    if os.geteuid() == 0:
        # root outside is an ordinary uid inside: tools that refuse root (claude) run, files stay root's outside
        argv += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    home_host = host_home()
    argv += ["--tmpfs", str(home_host)]  # first, so readable entries under the home come back on top
    mounted: list[Path] = []
    for entry in fs.readable:
        for p in expand(entry, spec):
            if not os.path.lexists(p) or any(_under(p, m) for m in mounted):
                continue
            if p.is_symlink() and p.parent == Path("/"):
                argv += ["--symlink", os.readlink(p), str(p)]
            else:
                argv += ["--ro-bind", str(p), str(p)]
            mounted.append(p)
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
    if spec.home_bind:
        argv += ["--bind", str(spec.home), str(spec.home)]
    elif not _under(spec.home, home_host):
        argv += ["--tmpfs", str(spec.home)]
    for entry in fs.writable:
        for p in expand(entry, spec):
            if p.exists():
                argv += ["--bind", str(p), str(p)]
                mounted.append(p)
    for p in spec.extra_ro:
        argv += ["--ro-bind", str(p), str(p)]
    for p in spec.data_dirs:
        argv += ["--ro-bind", str(p), str(p)]
    argv += ["--bind", str(spec.workdir), str(spec.workdir)]
    for p in spec.extra_rw:
        argv += ["--bind", str(p), str(p)]
    argv += git_binds(spec)  # after every writable bind, so nothing under .git is writable
    visible = [*mounted, spec.workdir, *spec.extra_ro, *spec.extra_rw, *spec.data_dirs]
    if spec.home_bind:
        visible.append(spec.home)
    if spec.git is not None and spec.git.linked:
        visible.append(spec.git.common_dir)
    # hidden paths last: no bind before them, whatever the worktree says, can show what they cover
    for entry in [*fs.hidden, *map(str, spec.hide_extra)]:
        for p in expand(entry, spec):
            if not os.path.lexists(p) or not any(_under(p, v) for v in visible):
                continue
            if _under(spec.workdir, p):
                continue  # never hide the worktree itself
            if p.is_dir() and not p.is_symlink():
                argv += ["--tmpfs", str(p), "--remount-ro", str(p)]
            elif spec.empty_file is not None:
                argv += ["--ro-bind", str(spec.empty_file), str(p)]
    if spec.proxy_dir is not None:
        argv += ["--ro-bind", str(spec.proxy_dir), SANDBOX_RUN]
    for key in sorted(spec.env):
        argv += ["--setenv", key, spec.env[key]]
    if secret_fd is not None:
        argv += ["--args", str(secret_fd)]
    argv += ["--chdir", str(spec.workdir), "--"]
    if spec.proxy_dir is not None:  # the runner puts bridge.py beside proxy.sock
        argv += [inner_python(), "-I", "-S", f"{SANDBOX_RUN}/bridge.py", f"{SANDBOX_RUN}/proxy.sock",
                 str(PROXY_PORT), ",".join(spec.forwards), "--"]
    return argv + list(command)


def secret_args(secrets: Mapping[str, str]) -> bytes:
    """NUL-separated `--setenv NAME VALUE` for bwrap's --args FD (kept out of the visible argv)."""
    parts: list[str] = []
    for name in sorted(secrets):
        parts += ["--setenv", name, secrets[name]]
    return b"".join(p.encode() + b"\0" for p in parts)
