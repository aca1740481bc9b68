"""git on the host, on checkouts a sandbox could write.

Everything inside a worktree is hostile: its `.git` file, any `commondir` it points at,
`.gitattributes`, nested repositories. So every git command loopmeter runs from the host:

- names its repository with `GIT_DIR` and `GIT_WORK_TREE` taken from a `GitLayout`
  that loopmeter builds from its own records (the run's repository and git's own list
  of that repository's worktrees), never from discovery in the worktree;
- reads no system or global configuration (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL`),
  and overrides every key that makes git run a program (`SAFE_CONFIG`, plus the
  filter, diff and merge drivers the repository defines);
- starts from a small clean environment, so no `GIT_*` variable of the caller leaks in.

Inside every sandbox the git directories and the worktree's `.git` are bound read-only
(`loopmeter.sandbox.spec.git_binds`), so the repository configuration these commands
read is the one the user wrote.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loopmeter.errors import LoopmeterError

# Keys that make git run a program, set to something that runs nothing. `-c` beats the
# repository's own config and is passed on to any git process git itself starts.
SAFE_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.pager", "cat"),
    ("core.editor", "false"),
    ("core.askPass", "false"),
    ("core.sshCommand", "false"),
    ("core.gitProxy", "false"),
    ("core.attributesFile", "/dev/null"),
    ("core.untrackedCache", "false"),
    ("credential.helper", ""),
    ("gpg.program", "false"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("protocol.allow", "never"),
    ("submodule.recurse", "false"),
    ("diff.ignoreSubmodules", "all"),
    ("status.submoduleSummary", "false"),
    ("sequence.editor", "false"),
    ("advice.detachedHead", "false"),
)
_DRIVER_KEYS = {"filter": ("clean", "smudge", "process"), "diff": ("textconv", "command"), "merge": ("driver",)}
_DRIVER_VALUE = {"driver": "false"}  # a merge driver that fails: the merge stops, nothing runs

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "loopmeter",
    "GIT_AUTHOR_EMAIL": "loopmeter@localhost",
    "GIT_COMMITTER_NAME": "loopmeter",
    "GIT_COMMITTER_EMAIL": "loopmeter@localhost",
}


class UntrustedGit(LoopmeterError):
    """A checkout whose git pointers cannot be trusted (planted `commondir`, a `.git` link...)."""


@dataclass(frozen=True)
class GitLayout:
    """Where a checkout's git data lives, as loopmeter knows it (not as the checkout says)."""

    work_tree: Path
    git_dir: Path  # the checkout's own git dir: common_dir, or common_dir/worktrees/<name>
    common_dir: Path  # the repository's git dir: config, hooks, objects, refs

    @property
    def linked(self) -> bool:
        return self.git_dir != self.common_dir

    @property
    def dotgit(self) -> Path:
        return self.work_tree / ".git"

    @property
    def dotgit_text(self) -> str:
        return f"gitdir: {self.git_dir}\n"


def clean_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_ATTR_NOSYSTEM": "1",
           "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_EDITOR": "false", "GIT_ASKPASS": "false",
           "GIT_NO_REPLACE_OBJECTS": "1", "GIT_OPTIONAL_LOCKS": "0"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    return env


def _run(args: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None, check: bool = True) -> str:
    out = subprocess.run(["git", *args], env=dict(env), cwd=cwd, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, check=False)
    if check and out.returncode != 0:
        raise GitError(args, out.returncode, out.stderr)
    return out.stdout


class GitError(LoopmeterError):
    def __init__(self, args: Sequence[str], code: int, stderr: str):
        self.args_ = list(args)
        self.code = code
        self.stderr = stderr.strip()
        first = next((a for a in args if not a.startswith("-") and "=" not in a), "git")
        super().__init__(f"git {first} failed (exit {code}): {self.stderr or 'no message'}")


class HostGit:
    """git for one checkout whose layout loopmeter knows: `HostGit(layout)("status", "--porcelain")`."""

    def __init__(self, layout: GitLayout):
        self.layout = layout
        self._config: list[str] | None = None

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = clean_env()
        env.update({"GIT_DIR": str(self.layout.git_dir), "GIT_WORK_TREE": str(self.layout.work_tree)})
        env.update(extra or {})
        return env

    def config_args(self) -> list[str]:
        """`-c` pairs for SAFE_CONFIG and for every filter/diff/merge driver the repository defines."""
        if self._config is None:
            args: list[str] = []
            for key, value in SAFE_CONFIG:
                args += ["-c", f"{key}={value}"]
            names = _run(["config", "--name-only", "--get-regexp", r"^(filter|diff|merge)\..+\..+$"],
                         self.env(), check=False)
            drivers = sorted({(n.split(".", 1)[0], n.split(".", 1)[1].rsplit(".", 1)[0]) for n in names.split()})
            for section, driver in drivers:
                for key in _DRIVER_KEYS.get(section, ()):
                    args += ["-c", f"{section}.{driver}.{key}={_DRIVER_VALUE.get(key, '')}"]
                if section == "filter":
                    args += ["-c", f"filter.{driver}.required=false"]
            self._config = args
        return self._config

    def __call__(self, *args: str, env: Mapping[str, str] | None = None, check: bool = True) -> str:
        return _run([*self.config_args(), *args], self.env(env), cwd=self.layout.work_tree, check=check)

    def identity(self) -> dict[str, str]:
        """The user's name and email (their global config included: reading it runs nothing),
        else loopmeter's own, as GIT_AUTHOR_* / GIT_COMMITTER_* variables."""
        env = {k: v for k, v in self.env().items() if k not in ("GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL")}
        name = _run(["config", "--get", "user.name"], env, check=False).strip()
        email = _run(["config", "--get", "user.email"], env, check=False).strip()
        if not email:
            return dict(GIT_IDENTITY)
        name = name or email
        return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


# -- layouts --------------------------------------------------------------------------


def _read_small(path: Path, limit: int = 4096) -> str | None:
    """A small regular file's text, never through a link; None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


_SECTION = re.compile(r'\[\s*remote\s+"origin"\s*\]', re.IGNORECASE)
_URL_KEY = re.compile(r"url\s*=\s*(.*)$", re.IGNORECASE)


def origin_url(layout: GitLayout) -> str | None:
    """The `origin` remote's URL in the repository's config, read as plain text (no git
    process, no include followed; the first `url` of `[remote "origin"]`), or None."""
    text = _read_small(layout.common_dir / "config", limit=64 << 10)
    in_origin = False
    for raw in (text or "").splitlines():
        line = raw.strip()
        if line.startswith("["):
            in_origin = _SECTION.fullmatch(line) is not None
            continue
        m = _URL_KEY.match(line) if in_origin else None
        if m is not None:
            value = m.group(1).strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def repo_layout(repo: Path) -> GitLayout:
    """The layout of the user's own checkout (the run's repository, recorded when the run began).

    Its `.git` is a folder, or a file when the user's checkout is itself a linked worktree."""
    repo = Path(os.path.abspath(repo))
    if _real_dir(repo / ".git"):
        git_dir = repo / ".git"
        if (git_dir / "commondir").exists():
            raise UntrustedGit(f"{git_dir} holds a commondir file, which only a linked worktree's git dir has",
                               hint="something rewrote this repository's git dir; inspect it before using git here")
        return GitLayout(repo, git_dir, git_dir)
    layout = checkout_layout(repo)
    if layout is None:
        raise LoopmeterError(f"{repo} is not a git checkout", hint="pass the repository's top-level folder")
    return layout


def worktree_layout(repo: Path, worktree: Path) -> GitLayout:
    """A linked worktree of `repo`, found in the repository's own list of its worktrees
    (`<common dir>/worktrees/*/gitdir`), which no sandbox can write."""
    common = repo_layout(repo).common_dir
    worktree = Path(os.path.abspath(worktree))
    want = os.path.normpath(worktree / ".git")
    admin = common / "worktrees"
    for entry in sorted(admin.iterdir()) if _real_dir(admin) else []:
        text = _read_small(entry / "gitdir")
        if text is not None and _real_dir(entry) and os.path.normpath(text.strip()) == want:
            return GitLayout(worktree, entry, common)
    raise LoopmeterError(f"{worktree} is not a worktree of {repo}",
                         hint="`git worktree list` in the repository shows its worktrees")


def checkout_layout(workdir: Path) -> GitLayout | None:
    """The layout a checkout claims, accepted only when every pointer agrees (for folders
    loopmeter has no record of, e.g. `sandbox exec --workdir DIR`); None otherwise.

    A linked worktree's `.git` file names `<common>/worktrees/<name>`, whose `gitdir`
    names the `.git` file back and whose `commondir` names `<common>`: anything else
    (a `.git` link, a `commondir` elsewhere, a pointer to a folder the checkout made
    itself) is not followed."""
    workdir = Path(os.path.abspath(workdir))
    dotgit = workdir / ".git"
    if _real_dir(dotgit):
        if (dotgit / "commondir").exists():
            return None
        return GitLayout(workdir, dotgit, dotgit)
    text = _read_small(dotgit)
    if text is None or not text.startswith("gitdir:"):
        return None
    git_dir = Path(os.path.normpath(workdir / text.split(":", 1)[1].strip()))
    common = git_dir.parent.parent
    back = _read_small(git_dir / "gitdir")
    commondir = _read_small(git_dir / "commondir")
    if (git_dir.parent.name != "worktrees" or not _real_dir(git_dir) or not _real_dir(common)
            or back is None or os.path.normpath(back.strip()) != str(dotgit) or commondir is None
            or os.path.normpath(git_dir / commondir.strip()) != str(common)
            or (common / "commondir").exists() or os.path.realpath(common) != str(common)
            or common == workdir or workdir in common.parents):
        return None
    return GitLayout(workdir, git_dir, common)


def restore_dotgit(layout: GitLayout) -> bool:
    """Make the worktree's `.git` say what loopmeter's records say; True when it had to.

    Whatever is there (a rewritten file, a folder, a link) is removed without following it."""
    if not layout.linked:
        return False
    if _read_small(layout.dotgit) == layout.dotgit_text:
        return False
    remove_path(layout.dotgit)
    tmp = layout.work_tree / f".git.loopmeter-{os.getpid()}"
    remove_path(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, layout.dotgit_text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, layout.dotgit)
    return True


def remove_path(path: Path) -> None:
    """Remove a file, link or folder without following any link (a link goes, not its target)."""
    from loopmeter import safefs

    safefs.remove(path.parent, path.name)
