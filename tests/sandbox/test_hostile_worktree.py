"""The worktree is hostile: real sandboxed code attacks host-side git and the next sandbox.

Each attack is written as a prompt-injected agent would write it. A marker file on the
host proves it failed: the payloads `touch` it, so its absence after every host-side git
step loopmeter takes (commit, diffstat, status, diff, apply, clean) shows none ran.
Positive controls show each payload does fire when git is run the ordinary way.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from loopmeter.hostgit import GitLayout, checkout_layout, worktree_layout

from .conftest import git

pytestmark = pytest.mark.usefixtures("loopmeter_home")


@pytest.fixture
def attempt(tmp_path: Path, repo: Path) -> GitLayout:
    """A linked worktree of `repo`, as `loopmeter run` makes one."""
    from loopmeter.agents.worktree import create_worktree

    base = git(repo, "rev-parse", "HEAD").strip()
    wt = create_worktree(repo, base, "loopmeter/R1/evil", tmp_path / "worktrees" / "R1" / "evil")
    return worktree_layout(repo, wt)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def payload(where: Path, marker: Path) -> Path:
    """An executable that leaves `marker` on the host when anything runs it."""
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {marker}\ncat >/dev/null 2>&1 || true\n")
    where.chmod(0o755)
    return where


def evil_gitdir(path: Path, marker: Path) -> Path:
    """A git dir whose config runs the payload from every key that runs a program."""
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    prog = payload(path / "payload.sh", marker)
    for key, value in [("core.bare", "false"), ("core.fsmonitor", str(prog)), ("core.hooksPath", str(path)),
                       ("core.pager", str(prog)), ("diff.external", str(prog)), ("core.sshCommand", str(prog)),
                       ("filter.x.clean", str(prog)), ("filter.x.smudge", str(prog)),
                       ("diff.x.textconv", str(prog)), ("credential.helper", f"!{prog}")]:
        subprocess.run(["git", "--git-dir", str(path), "config", key, value], check=True)
    for hook in ("post-commit", "pre-commit", "reference-transaction", "post-checkout", "prepare-commit-msg"):
        payload(path / hook, marker)
    return path


def host_git_steps(repo: Path, layout: GitLayout) -> None:
    """Every git step loopmeter takes on an attempt's worktree from the host."""
    from loopmeter.agents.clean import _changes, _repo
    from loopmeter.agents.worktree import commit_all, diffstat
    from loopmeter.analytics.runs import attempt_diff

    base = git(repo, "rev-parse", "HEAD").strip()
    (layout.work_tree / "work.txt").write_text("the agent's work\n")
    head = commit_all(repo, layout.work_tree, "attempt")
    assert head != base  # the work was committed, through the records' git dir
    assert diffstat(repo, layout.work_tree, base)["files"] >= 1
    assert _changes(_repo(str(repo)), layout.work_tree) is None
    assert "the agent's work" in (attempt_diff(str(repo), {"base_commit": base, "head_commit": head}) or "")


def run_in_sandbox(runner, layout: GitLayout | None, workdir: Path, script: str):
    return runner.run(["bash", "-c", script], workdir=workdir, policy="default", role="agent",
                      actor="agent:evil", git=layout)


# -- 1. host git reads what the sandbox wrote ---------------------------------------------

POINTER_ATTACKS = {
    "rewrite .git file": 'printf "gitdir: %s\\n" "$PWD/evil" > .git',
    "append to .git file": 'printf "gitdir: %s\\n" "$PWD/evil" >> .git',
    "replace .git by rename": 'printf "gitdir: %s\\n" "$PWD/evil" > g && mv -f g .git',
    "replace .git by a folder": 'rm -rf .git; cp -r evil .git',
    "replace .git by a link": 'rm -f .git; ln -s evil .git',
    "plant commondir": 'echo "$PWD/evil" > "$ADMIN/commondir"',
    "rewrite gitdir back-pointer": 'echo "$PWD/evil" > "$ADMIN/gitdir"',
    "repository config": 'printf "[core]\\n\\tfsmonitor = $PWD/evil/payload.sh\\n" >> "$COMMON/config"',
    "worktree config": 'printf "[core]\\n\\tfsmonitor = $PWD/evil/payload.sh\\n" > "$ADMIN/config.worktree"',
    "repository hook": 'cp evil/post-commit "$COMMON/hooks/post-commit"; cp evil/post-commit "$COMMON/hooks/reference-transaction"',
    "info/attributes": 'echo "* filter=x diff=x" > "$COMMON/info/attributes"',
    "HEAD of the worktree": 'echo "ref: refs/heads/main" > "$ADMIN/HEAD"',
}


@pytest.mark.parametrize("attack", sorted(POINTER_ATTACKS))
def test_sandboxed_code_cannot_redirect_host_git(runner, repo: Path, attempt: GitLayout, marker: Path,
                                                 attack: str) -> None:
    wt = attempt.work_tree
    evil_gitdir(wt / "evil", marker)
    before = {p: p.read_bytes() for p in [attempt.dotgit, attempt.common_dir / "config",
                                          attempt.git_dir / "HEAD", attempt.git_dir / "gitdir"]}
    script = f"export ADMIN={attempt.git_dir} COMMON={attempt.common_dir}; {POINTER_ATTACKS[attack]}; echo done"
    res = run_in_sandbox(runner, attempt, wt, script)
    assert "done" in res.stdout, res.stderr
    # the kernel refused the write: a read-only mount, or a mount point that cannot be replaced
    assert any(e in res.stderr for e in ("Read-only file system", "Device or resource busy")), res.stderr
    # nothing under the git dirs changed on the host, and no file appeared there
    assert {p: p.read_bytes() for p in before} == before
    assert not (attempt.git_dir / "commondir").read_text().strip().endswith("evil")
    assert not (attempt.git_dir / "config.worktree").exists()
    assert not (attempt.common_dir / "hooks" / "post-commit").exists()
    assert not (attempt.common_dir / "info" / "attributes").exists()
    host_git_steps(repo, attempt)
    # the user's own git, run the ordinary way in the worktree and in the repository
    subprocess.run(["git", "status"], cwd=wt, capture_output=True, check=False)
    subprocess.run(["git", "status"], cwd=repo, capture_output=True, check=False)
    assert not marker.exists(), marker.read_text()


@pytest.mark.parametrize("planted", ["file", "folder", "link", "commondir"])
def test_host_git_ignores_a_planted_git_pointer(runner, store, repo: Path, attempt: GitLayout, marker: Path,
                                               planted: str) -> None:
    """Should a hostile `.git` reach the disk anyway (an older loopmeter, `--sandbox none`),
    host git still takes its git dir from the records, and the next sandbox puts `.git` back."""
    from sqlmodel import select

    from loopmeter.store import Audit

    wt = attempt.work_tree
    evil = evil_gitdir(wt / "evil", marker)
    os.unlink(attempt.dotgit)
    if planted == "file":
        attempt.dotgit.write_text(f"gitdir: {evil}\n")
    elif planted == "folder":
        subprocess.run(["cp", "-r", str(evil), str(attempt.dotgit)], check=True)
    elif planted == "link":
        attempt.dotgit.symlink_to(evil)
    else:  # a consistent-looking linked layout whose commondir is the attacker's
        fake = wt / "fake" / "worktrees" / "x"
        fake.mkdir(parents=True)
        (fake / "gitdir").write_text(f"{attempt.dotgit}\n")
        (fake / "commondir").write_text(f"{evil}\n")
        (fake / "HEAD").write_text((attempt.git_dir / "HEAD").read_text())
        attempt.dotgit.write_text(f"gitdir: {fake}\n")
    # positive control: git run the ordinary way in this worktree fires the payload
    if planted != "commondir":
        subprocess.run(["git", "status"], cwd=wt, capture_output=True, check=False)
        assert marker.exists()
        marker.unlink()
    host_git_steps(repo, attempt)
    assert not marker.exists(), marker.read_text()
    res = run_in_sandbox(runner, attempt, wt, "cat .git")
    assert res.stdout == attempt.dotgit_text
    assert attempt.dotgit.read_text() == attempt.dotgit_text
    with store.session() as s:
        rows = list(s.exec(select(Audit).where(Audit.rule_id == "git.pointer")))
    assert rows and rows[0].decision == "deny" and rows[0].target == str(attempt.dotgit)


def test_drivers_and_hooks_of_the_users_own_config_do_not_run_on_sandbox_files(
        runner, store, repo: Path, attempt: GitLayout, marker: Path) -> None:
    """The worktree's `.gitattributes` can name any driver the repository defines: none runs."""
    prog = payload(repo.parent / "driver.sh", marker)
    for key in ("filter.lfs.clean", "filter.lfs.smudge", "filter.lfs.process", "diff.lfs.textconv",
                "diff.lfs.command", "merge.lfs.driver", "core.fsmonitor"):
        git(repo, "config", key, str(prog))
    git(repo, "config", "filter.lfs.required", "true")
    for hook in ("post-commit", "pre-commit", "commit-msg", "prepare-commit-msg", "reference-transaction",
                 "post-checkout", "post-merge", "pre-merge-commit", "post-index-change"):
        payload(attempt.common_dir / "hooks" / hook, marker)
    # positive control: ordinary git in the repository runs them
    subprocess.run(["git", "status"], cwd=repo, capture_output=True, check=False)
    assert marker.exists()
    marker.unlink()
    res = run_in_sandbox(runner, attempt, attempt.work_tree,
                         "echo '* filter=lfs diff=lfs merge=lfs' > .gitattributes; echo x > data.bin; echo done")
    assert "done" in res.stdout
    host_git_steps(repo, attempt)
    assert not marker.exists(), marker.read_text()


def test_a_nested_repository_the_agent_made_runs_nothing_on_the_host(runner, repo: Path, attempt: GitLayout,
                                                                    marker: Path) -> None:
    wt = attempt.work_tree
    script = ("git init -q sub && cd sub && echo x > f && git add f && "
              "git -c user.name=a -c user.email=a@a commit -qm x && "
              f"cp {wt}/evil/payload.sh .git/p.sh && git config core.fsmonitor \"$PWD/.git/p.sh\" && "
              "mkdir -p .git/hooks && cp .git/p.sh .git/hooks/post-commit && echo done")
    evil_gitdir(wt / "evil", marker)
    res = run_in_sandbox(runner, attempt, wt, script)
    assert "done" in res.stdout, res.stderr
    host_git_steps(repo, attempt)
    (wt / "sub" / "f").write_text("changed\n")
    from loopmeter.agents.clean import _changes, _repo

    _changes(_repo(str(repo)), wt)
    assert not marker.exists(), marker.read_text()


def test_apply_runs_nothing_the_attempt_brought(runner, store, repo: Path, tmp_path: Path, marker: Path) -> None:
    """`loopmeter apply` squash-merges a branch whose files came out of a sandbox."""
    from loopmeter.agents.apply import apply_attempt
    from loopmeter.agents.worktree import commit_all, create_worktree
    from loopmeter.records import utcnow
    from loopmeter.store import Attempt, Run

    prog = payload(tmp_path / "driver.sh", marker)
    for key in ("merge.evil.driver", "filter.evil.clean", "filter.evil.smudge", "core.fsmonitor"):
        git(repo, "config", key, str(prog))
    for hook in ("post-commit", "post-merge", "pre-merge-commit", "reference-transaction", "commit-msg"):
        payload(repo / ".git" / "hooks" / hook, marker)
    base = git(repo, "rev-parse", "HEAD").strip()
    wt = create_worktree(repo, base, "loopmeter/R9/a", tmp_path / "worktrees" / "R9" / "a")
    assert not marker.exists()  # post-checkout and reference-transaction did not run either
    res = run_in_sandbox(runner, worktree_layout(repo, wt), wt,
                         "echo '* merge=evil filter=evil' > .gitattributes; echo two >> a.txt; echo done")
    assert "done" in res.stdout
    head = commit_all(repo, wt, "attempt")
    store.save(Run(id="R9", kind="loop", task="t", repo=str(repo), base_commit=base, status="done",
                   started_at=utcnow()),
               Attempt(id="R9-1", run_id="R9", agent="nop", branch="loopmeter/R9/a", base_commit=base,
                       head_commit=head, status="passed", worktree=str(wt), iterations=1))
    sha, _ = apply_attempt(store, "R9", "R9-1")
    assert git(repo, "show", f"{sha}:a.txt") == "one\ntwo\n"
    assert not marker.exists(), marker.read_text()


# -- 2. a planted .git must not widen the next sandbox ------------------------------------


@pytest.mark.parametrize("variant", ["dotgit-file-to-root", "dotgit-link-to-root", "commondir-to-root",
                                     "fake-worktree-commondir-up", "dotgit-to-hidden-home"])
def test_a_planted_git_pointer_does_not_widen_the_next_sandbox(runner, repo: Path, attempt: GitLayout,
                                                                tmp_path: Path, loopmeter_home: Path,
                                                                variant: str) -> None:
    secret_dir = tmp_path / "private"
    secret_dir.mkdir()
    (secret_dir / "token").write_text("HOST-SECRET\n")
    (loopmeter_home / "store-secret").write_text("HOST-SECRET\n")
    wt = attempt.work_tree
    os.unlink(attempt.dotgit)
    if variant == "dotgit-file-to-root":
        attempt.dotgit.write_text("gitdir: ../../../../../../../../..\n")
    elif variant == "dotgit-link-to-root":
        attempt.dotgit.symlink_to("/")
    elif variant == "commondir-to-root":
        (wt / "g").mkdir()
        (wt / "g" / "commondir").write_text("../../../../../../../../..\n")
        (wt / "g" / "gitdir").write_text(f"{attempt.dotgit}\n")
        attempt.dotgit.write_text(f"gitdir: {wt / 'g'}\n")
    elif variant == "fake-worktree-commondir-up":
        fake = wt / "c" / "worktrees" / "x"
        fake.mkdir(parents=True)
        (fake / "gitdir").write_text(f"{attempt.dotgit}\n")
        (fake / "commondir").write_text(f"{os.path.relpath('/', fake)}\n")
        attempt.dotgit.write_text(f"gitdir: {fake}\n")
    else:
        attempt.dotgit.write_text(f"gitdir: {loopmeter_home}/worktrees/x\n")
    script = (f"cat {secret_dir}/token {loopmeter_home}/store-secret .git/token .git/{secret_dir.name}/token "
              "/etc/shadow 2>/dev/null; ls / | head -50; echo done")
    # without loopmeter's records (sandbox exec): the pointers are not followed
    res = run_in_sandbox(runner, None, wt, script)
    assert "done" in res.stdout and "HOST-SECRET" not in res.stdout
    assert checkout_layout(wt) is None
    # with them (a run's attempt): .git is put back first, and only the repository's git dir is bound
    res = run_in_sandbox(runner, attempt, wt, script)
    assert "done" in res.stdout and "HOST-SECRET" not in res.stdout
    assert attempt.dotgit.read_text() == attempt.dotgit_text


def test_sandbox_argv_binds_git_dirs_read_only_before_the_hidden_paths(runner, repo: Path, attempt: GitLayout,
                                                                       loopmeter_home: Path) -> None:
    from loopmeter.policies import load_policy
    from loopmeter.sandbox.spec import bwrap_argv

    spec, _, _ = runner.build(["true"], workdir=attempt.work_tree, policy=load_policy("default"), role="agent",
                              actor="agent:x", git=attempt)
    argv = bwrap_argv(spec, ["true"])
    i_common = argv.index(str(attempt.common_dir))
    assert argv[i_common - 1] == "--ro-bind"
    i_dotgit = argv.index(str(attempt.dotgit))
    assert argv[i_dotgit - 1] == "--ro-bind"
    last_rw = max(i for i, a in enumerate(argv) if a == "--bind")
    assert i_common > last_rw and i_dotgit > last_rw
    hidden = [i for i, a in enumerate(argv) if a in ("--tmpfs",) and i > i_common]
    hides_after = [argv[i + 1] for i in hidden]
    ssh = str(Path("~/.ssh").expanduser())
    if os.path.isdir(ssh):
        assert ssh in hides_after or ssh not in argv


# -- 3. sandbox exec on the user's own checkout ---------------------------------------------


@pytest.mark.parametrize("attack", ["commondir", "config", "hook", "replace-git-dir", "index"])
def test_sandbox_exec_on_a_checkout_cannot_arm_the_users_next_git(repo: Path, tmp_path: Path, marker: Path,
                                                                 loopmeter_home: Path, attack: str) -> None:
    from tests.conftest import loopmeter_cmd

    evil = evil_gitdir(repo / "evil", marker)
    script = {
        "commondir": f"echo {evil} > .git/commondir",
        "config": f"git config core.fsmonitor {evil}/payload.sh; printf '[core]\\n\\tpager={evil}/payload.sh\\n' >> .git/config",
        "hook": f"cp {evil}/post-commit .git/hooks/post-checkout; cp {evil}/post-commit .git/hooks/pre-commit",
        "replace-git-dir": "mv .git .git-old; cp -r evil .git",
        "index": "echo garbage > .git/index",
    }[attack]
    before = (repo / ".git" / "config").read_bytes()
    out = subprocess.run([*loopmeter_cmd("sandbox", "exec", "--workdir", str(repo), "--", "bash", "-c",
                                         f"{script}; echo done")],
                         capture_output=True, text=True, timeout=120)
    assert "done" in out.stdout, out.stderr
    assert (repo / ".git" / "config").read_bytes() == before
    assert not (repo / ".git" / "commondir").exists() and not (repo / ".git-old").exists()
    subprocess.run(["git", "status"], cwd=repo, capture_output=True, check=False)
    subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qam", "x"], cwd=repo,
                   capture_output=True, check=False)
    assert not marker.exists(), marker.read_text()
