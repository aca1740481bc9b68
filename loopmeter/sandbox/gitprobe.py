"""The self-test's git-escape probes: sandboxed code tries to arm host-side git.

Each probe has a positive control, like every self-test check: a payload that ordinary
git does run, so a probe cannot pass because its payload never worked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopmeter.policies import Policy
    from loopmeter.sandbox.selftest import Check


def _probe_repo(base: Path) -> tuple[Path, Path, Any]:
    """A repository with one commit and one linked worktree, as `loopmeter run` makes them."""
    from loopmeter.agents.worktree import create_worktree
    from loopmeter.hostgit import GIT_IDENTITY, HostGit, clean_env, repo_layout, worktree_layout

    repo = base / "repo"
    repo.mkdir(parents=True)
    env = {**clean_env(), **GIT_IDENTITY}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], env=env, check=True)
    (repo / "a.txt").write_text("one\n")
    git = HostGit(repo_layout(repo))
    git("add", "a.txt")
    git("commit", "-q", "-m", "probe", env=GIT_IDENTITY)
    wt = create_worktree(repo, git("rev-parse", "HEAD").strip(), "loopmeter/selftest/probe", base / "wt")
    return repo, wt, worktree_layout(repo, wt)


def _payload(path: Path, marker: Path) -> Path:
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    path.chmod(0o755)
    return path


def git_dirs_read_only(runner: Any, policy: Policy, work: Path, *_: Any) -> Check:
    """Sandboxed code rewrites `.git`, plants `commondir`, config and a hook; then loopmeter
    commits the attempt from the host. Control: a worktree file is written and committed."""
    from loopmeter.agents.worktree import commit_all
    from loopmeter.sandbox.selftest import Check

    base = work.parent / "git-ro"
    repo, wt, layout = _probe_repo(base)
    marker = base / "MARKER"
    evil = _payload(wt / "payload.sh", marker)
    script = (f"printf 'gitdir: %s\\n' \"$PWD\" > .git; echo {wt} > {layout.git_dir}/commondir; "
              f"printf '[core]\\n\\tfsmonitor = {evil}\\n' >> {layout.common_dir}/config; "
              f"cp {evil} {layout.common_dir}/hooks/post-commit; echo work > work.txt")
    res = runner.run(["sh", "-c", script], workdir=wt, policy=policy, role="agent", actor="agent:selftest",
                     git=layout)
    commit_all(repo, wt, "probe attempt")
    subprocess.run(["git", "status"], cwd=wt, capture_output=True, check=False)  # the user's own git, too
    untouched = (not marker.exists() and (wt / ".git").read_text() == layout.dotgit_text
                 and not (layout.git_dir / "commondir").read_text().strip().startswith(str(wt))
                 and "fsmonitor" not in (layout.common_dir / "config").read_text())
    show = subprocess.run(["git", "-C", str(repo), "show", "loopmeter/selftest/probe:work.txt"],
                          capture_output=True, text=True, check=False)
    control = res.exit_code == 0 and show.stdout.strip() == "work"
    return Check("git-dirs-read-only",
                 f"rewrite .git, commondir, config, hooks from inside: {'refused' if untouched else 'WRITTEN'}",
                 f"a worktree file committed from the host: {'ok' if control else 'FAILED'}", untouched and control)


def host_git_not_redirected(runner: Any, policy: Policy, work: Path, *_: Any) -> Check:
    """A hostile `.git` on disk (as if a sandbox had planted it) names a git dir whose
    fsmonitor is a payload. Control: ordinary git in that folder runs the payload.
    Denial: loopmeter's host git does not, and the next sandbox puts `.git` back."""
    from loopmeter.agents.worktree import commit_all, diffstat
    from loopmeter.hostgit import clean_env
    from loopmeter.sandbox.selftest import Check

    base = work.parent / "git-redirect"
    repo, wt, layout = _probe_repo(base)
    marker = base / "MARKER"
    evil = wt / "evil"
    subprocess.run(["git", "init", "-q", "--bare", str(evil)], env=clean_env(), check=True)
    prog = _payload(wt / "payload.sh", marker)
    for key, value in (("core.bare", "false"), ("core.fsmonitor", str(prog))):
        subprocess.run(["git", "--git-dir", str(evil), "config", key, value], env=clean_env(), check=True)
    (wt / ".git").write_text(f"gitdir: {evil}\n")
    subprocess.run(["git", "status"], cwd=wt, env=clean_env(), capture_output=True, check=False)
    control = marker.exists()
    marker.unlink(missing_ok=True)
    (wt / "work.txt").write_text("work\n")
    commit_all(repo, wt, "probe attempt")
    diffstat(repo, wt, "main")
    runner.run(["true"], workdir=wt, policy=policy, role="check", actor="check", git=layout)
    refused = not marker.exists() and (wt / ".git").read_text() == layout.dotgit_text
    return Check("git-pointer-not-followed",
                 f"host git on a worktree whose .git names a hostile git dir: {'not followed' if refused else 'RAN IT'}",
                 f"ordinary git in that folder runs the payload: {'yes' if control else 'NO (probe broken)'}",
                 refused and control)
