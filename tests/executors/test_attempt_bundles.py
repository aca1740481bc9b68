"""An attempt's commits travel back from a worker as a git bundle; a hostile one is refused.

Real git repositories in tmp dirs: the driver's repository, a worker's private copy made from the
base bundle, and bundles a sandboxed agent could have shaped (extra refs, a ref outside the
attempt's branch, an oversized one, a head that is not the one reported). No Ray needed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from loopmeter.executors import attempts
from loopmeter.executors.attempts import (
    BundleRefused,
    attempt_bundle,
    base_bundle,
    import_attempt,
    private_repo,
)

BRANCH = "loopmeter/RUN1/oracle"
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=ENV).stdout.strip()


@pytest.fixture
def driver(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "driver"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo, git(repo, "rev-parse", "HEAD")


def worker_commit(tmp_path: Path, driver: tuple[Path, str]) -> tuple[Path, str]:
    """A worker's private repository from the base bundle, with the attempt's branch one commit ahead."""
    repo, base = driver
    ref, sha, data = base_bundle(repo, base, "RUN1")
    assert git(repo, "for-each-ref", "refs/loopmeter") == ""  # the temporary ref is gone again
    private = private_repo(tmp_path / "node", data, sha, ref, base)
    wt = tmp_path / "node" / "wt"
    git(private, "worktree", "add", "-q", "-b", BRANCH, str(wt), base)
    (wt / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git(wt, "commit", "-qam", "fix")
    return private, git(wt, "rev-parse", "HEAD")


def test_an_attempt_branch_comes_back_into_the_driver_repository(tmp_path: Path, driver: tuple[Path, str]) -> None:
    repo, base = driver
    private, head = worker_commit(tmp_path, driver)
    got_head, data = attempt_bundle(private, BRANCH, base)
    assert got_head == head and data is not None
    assert import_attempt(repo, BRANCH, base, head, data) == head
    assert git(repo, "rev-parse", f"refs/heads/{BRANCH}") == head
    assert git(repo, "show", f"{head}:calc.py").endswith("a + b")
    assert git(repo, "for-each-ref", "--format=%(refname)") == f"refs/heads/{BRANCH}\nrefs/heads/main"
    # an attempt that committed nothing: its branch is the base commit, as locally
    assert import_attempt(repo, "loopmeter/RUN1/nop", base, base, None) == base
    assert git(repo, "rev-parse", "refs/heads/loopmeter/RUN1/nop") == base


def _bundle(private: Path, tmp_path: Path, *refs: str, base: str) -> bytes:
    out = tmp_path / "hostile.bundle"
    git(private, "bundle", "create", "-q", str(out), *refs, f"^{base}")
    return out.read_bytes()


def test_a_bundle_with_an_extra_ref_or_a_ref_outside_the_branch_is_refused(tmp_path: Path,
                                                                         driver: tuple[Path, str]) -> None:
    repo, base = driver
    private, head = worker_commit(tmp_path, driver)
    git(private, "update-ref", "refs/heads/main-evil", head)
    git(private, "update-ref", "refs/heads/loopmeter/RUN1/other", head)
    before = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")

    extra = _bundle(private, tmp_path, f"refs/heads/{BRANCH}", "refs/heads/main-evil", base=base)
    with pytest.raises(BundleRefused, match="refs other than refs/heads/loopmeter/RUN1/oracle: refs/heads/main-evil"):
        import_attempt(repo, BRANCH, base, head, extra)
    outside = _bundle(private, tmp_path, "refs/heads/loopmeter/RUN1/other", base=base)
    with pytest.raises(BundleRefused, match="refs other than"):
        import_attempt(repo, BRANCH, base, head, outside)
    # the right ref, but not at the head the worker reported
    right = _bundle(private, tmp_path, f"refs/heads/{BRANCH}", base=base)
    with pytest.raises(BundleRefused, match="not at the reported head"):
        import_attempt(repo, BRANCH, base, base, right)
    # commits claimed with no bundle
    with pytest.raises(BundleRefused, match="sent no commits"):
        import_attempt(repo, BRANCH, base, head, None)
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)") == before  # nothing was taken


def test_an_oversized_or_garbage_bundle_is_refused(tmp_path: Path, driver: tuple[Path, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    repo, base = driver
    private, head = worker_commit(tmp_path, driver)
    _, data = attempt_bundle(private, BRANCH, base)
    assert data is not None
    monkeypatch.setattr(attempts, "MAX_BUNDLE_BYTES", len(data) - 1)  # a limit just below this bundle
    with pytest.raises(BundleRefused, match="over the 0 MiB limit"):
        import_attempt(repo, BRANCH, base, head, data)
    with pytest.raises(BundleRefused, match="over 0 MiB"):  # the worker refuses to send it too
        attempt_bundle(private, BRANCH, base)
    monkeypatch.undo()
    with pytest.raises(BundleRefused, match="not a git bundle"):
        import_attempt(repo, BRANCH, base, head, b"# v9 git bundle\nxx\n\n")
    # a valid header over a damaged pack: git's own verification refuses it
    header_end = data.index(b"\n\n") + 2
    damaged = data[:header_end] + b"PACK" + b"\0" * 64
    with pytest.raises(BundleRefused, match="git refused the attempt's bundle"):
        import_attempt(repo, BRANCH, base, head, damaged)
    assert git(repo, "branch", "--list", BRANCH) == ""


def test_a_branch_that_does_not_descend_from_the_base_is_refused(tmp_path: Path, driver: tuple[Path, str]) -> None:
    repo, base = driver
    private, _ = worker_commit(tmp_path, driver)
    empty_tree = subprocess.run(["git", "mktree"], cwd=private, input="", capture_output=True, text=True,
                                check=True).stdout.strip()
    orphan_head = git(private, "commit-tree", empty_tree, "-m", "unrelated")  # no parent: not from the base
    git(private, "update-ref", f"refs/heads/{BRANCH}", orphan_head)
    out = tmp_path / "orphan.bundle"
    git(private, "bundle", "create", "-q", str(out), f"refs/heads/{BRANCH}")
    with pytest.raises(BundleRefused, match="does not descend from the base commit"):
        import_attempt(repo, BRANCH, base, orphan_head, out.read_bytes())
    assert git(repo, "branch", "--list", BRANCH) == ""


def test_a_private_repository_is_made_once_and_completed_after_a_killed_worker(tmp_path: Path,
                                                                                driver: tuple[Path, str]) -> None:
    repo, base = driver
    ref, sha, data = base_bundle(repo, base, "RUN1")
    private = private_repo(tmp_path / "node", data, sha, ref, base)
    assert private_repo(tmp_path / "node", data, sha, ref, base) == private  # reused as it is
    git(private, "update-ref", "-d", "refs/loopmeter/base")  # a worker killed before its fetch finished
    assert private_repo(tmp_path / "node", data, sha, ref, base) == private
    assert git(private, "rev-parse", "refs/loopmeter/base") == base
    with pytest.raises(Exception, match="arrived damaged"):
        private_repo(tmp_path / "other", data[:-1], sha, ref, base)
