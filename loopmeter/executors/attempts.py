"""Attempts of `loopmeter run` on another machine: what travels, what a worker runs, what comes back.

The driver (the machine that started the run, which has the repository) ships the run's base
commit once as a git bundle, keyed by its sha256 like an eval task's files, and the run's policy
file by content with each attempt (a preset by name): a worker never reads the driver's path. A worker fetches it
into a private repository of its own (`$LOOPMETER_HOME/remote/<run>/<attempt>/repo`), runs the
attempt's graph there in its sandbox (same policy, budgets and store; checkpoints in the store's
PostgreSQL, or in the driver's SQLite file on a one-node cluster), and returns the attempt's
commits as a bundle of the one branch `loopmeter/<run>/<agent>` (bounded in size).

That bundle was made from a worktree a sandboxed agent wrote: it is hostile. The driver checks its
header itself (one ref, the attempt's branch, at the head the worker reported; within the size
limit), lets git verify it against the repository, and fetches only that ref with host git
(loopmeter/hostgit.py: no hooks, no config from the bundle, objects fsck-checked), then checks the
branch descends from the base commit. Nothing here imports ray (loopmeter/executors/ray_executor.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.errors import LoopmeterError

if TYPE_CHECKING:
    from loopmeter.agents.loop_runtime import _Runtime
    from loopmeter.policies import Policy, PolicyText
    from loopmeter.tasks import Task

MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # an attempt's commits coming back
MAX_BASE_BUNDLE_BYTES = 512 * 1024 * 1024  # the base commit going out
# host git may read a bundle file (protocol "file"); every other transport stays refused (SAFE_CONFIG)
BUNDLE_GIT = ("-c", "protocol.file.allow=always", "-c", "fetch.fsckObjects=true", "-c", "transfer.fsckObjects=true",
              "-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "fetch.writeCommitGraph=false")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class BundleRefused(LoopmeterError):
    """A bundle returned by a worker that loopmeter will not take into the repository."""


@dataclass(frozen=True)
class AttemptSpec:
    """Everything a node needs to run one attempt; picklable, and free of secrets."""

    run_id: str
    attempt_id: str
    branch: str
    base_commit: str
    base_ref: str  # the ref the base bundle holds
    base_sha: str  # sha256 of the base bundle
    store_url: str  # no password in it (executors.base.public_store_url)
    task_sha: str | None = None  # the task's files, when the run has a task directory
    policy: PolicyText | None = None  # the run's policy file by content (None: a preset, by name)
    checkpoint_path: str | None = None  # the driver's SQLite checkpoints (a one-node cluster with a SQLite store)
    resume: bool | None = None  # an answer to the attempt's pending question
    fresh: dict[str, Any] | None = field(default=None)  # the attempt graph's first input


@dataclass(frozen=True)
class RemotePlace:
    """Where a worker runs an attempt: its private repository and worktrees, the task it unpacked."""

    repo: Path
    worktrees: Path
    task: Task | None = None
    checkpoint_path: Path | None = None
    policy: Policy | None = None  # the run's policy as the driver read it (a preset: None, loaded by name)


# -- the driver: the base commit going out -------------------------------------------------------

def base_bundle(repo: Path, base_commit: str, run_id: str) -> tuple[str, str, bytes]:
    """(ref, sha256, bytes): the base commit and its history as a bundle of one temporary ref."""
    from loopmeter.hostgit import HostGit, repo_layout

    git = HostGit(repo_layout(repo))
    ref = f"refs/loopmeter/base/{run_id}"
    tmp = Path(tempfile.mkdtemp(prefix="loopmeter-bundle-"))
    try:
        git("update-ref", ref, base_commit)
        git("bundle", "create", "-q", str(tmp / "base.bundle"), ref)
        data = (tmp / "base.bundle").read_bytes()
    finally:
        git("update-ref", "-d", ref, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    if len(data) > MAX_BASE_BUNDLE_BYTES:
        raise LoopmeterError(f"the repository's history is {len(data) >> 20} MiB as a bundle, over "
                             f"{MAX_BASE_BUNDLE_BYTES >> 20} MiB", hint="run it with --executor local")
    return ref, hashlib.sha256(data).hexdigest(), data


# -- the worker --------------------------------------------------------------------------------

def private_repo(place: Path, base: bytes, base_sha: str, base_ref: str, base_commit: str) -> Path:
    """A repository of this node's own at `place`, holding the base commit (made once per attempt)."""
    import subprocess

    from loopmeter.hostgit import HostGit, clean_env, repo_layout

    if hashlib.sha256(base).hexdigest() != base_sha:
        raise LoopmeterError(f"the base bundle {base_sha[:12]} arrived damaged (hash mismatch)")
    repo = place / "repo"
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "-b", "loopmeter-empty", str(repo)], env=clean_env(), check=True,
                       capture_output=True)
    git = HostGit(repo_layout(repo))
    if git("rev-parse", "-q", "--verify", "refs/loopmeter/base", check=False).strip() == base_commit:
        return repo  # made by an earlier step of this attempt on this node
    path = place / "base.bundle"
    path.write_bytes(base)
    try:
        git(*BUNDLE_GIT, "fetch", "-q", "--no-tags", str(path), f"+{base_ref}:refs/loopmeter/base")
    finally:
        path.unlink(missing_ok=True)
    if git("rev-parse", "refs/loopmeter/base").strip() != base_commit:
        raise LoopmeterError(f"the base bundle does not hold commit {base_commit}")
    return repo


def attempt_bundle(repo: Path, branch: str, base_commit: str) -> tuple[str, bytes | None]:
    """(head, bundle of base..head on `branch`, or None when the attempt committed nothing)."""
    from loopmeter.hostgit import HostGit, repo_layout

    git = HostGit(repo_layout(repo))
    head = git("rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}").strip()
    if head == base_commit:
        return head, None
    tmp = Path(tempfile.mkdtemp(prefix="loopmeter-bundle-"))
    try:
        git("bundle", "create", "-q", str(tmp / "attempt.bundle"), f"refs/heads/{branch}", f"^{base_commit}")
        size = (tmp / "attempt.bundle").stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise BundleRefused(f"the attempt's commits are {size >> 20} MiB as a bundle, over "
                                f"{MAX_BUNDLE_BYTES >> 20} MiB")
        return head, (tmp / "attempt.bundle").read_bytes()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_attempt_here(spec: AttemptSpec, base: bytes, task_files: bytes | None) -> dict[str, Any]:
    """What a worker runs for one attempt: drive its graph in a private repository, return its commits.

    Returns {"finished", "head", "bundle", "node"} (node: this host's name); rows (attempt, iterations, usage, spans, audit)
    go to the shared store as the attempt runs, its checkpoints to the run's checkpointer."""
    import socket

    from langgraph.types import Command

    from loopmeter.agents.loop_runtime import _Runtime
    from loopmeter.config import load_settings
    from loopmeter.executors.base import open_store_url

    os.environ.pop("OMP_NUM_THREADS", None)  # Ray sets it per task; checks and agents should not inherit it
    settings = load_settings()
    place = settings.home / "remote" / spec.run_id / spec.attempt_id
    repo = private_repo(place, base, spec.base_sha, spec.base_ref, spec.base_commit)
    task = None
    if spec.task_sha and task_files is not None:
        from loopmeter.executors.ray_executor import unpack_task
        from loopmeter.tasks import load_task

        task = load_task(unpack_task(spec.task_sha, task_files, settings.home / "cache" / "tasks"))
    store = open_store_url(spec.store_url)
    remote = RemotePlace(repo=repo, worktrees=place / "worktrees", task=task,
                         checkpoint_path=Path(spec.checkpoint_path) if spec.checkpoint_path else None,
                         policy=spec.policy.load() if spec.policy is not None else None)
    rt = _Runtime.load(spec.run_id, store, settings, None, None, remote=remote)
    try:
        # the worktree on this node (a resume may land on another node than the earlier steps: it starts
        # again from the base commit there, while the checkpoint keeps the steps already done)
        from loopmeter.agents.worktree import create_worktree
        from loopmeter.store import Attempt

        row = store.get(Attempt, spec.attempt_id)
        if row is None:
            raise LoopmeterError(f"no attempt {spec.attempt_id} in the store")
        create_worktree(repo, spec.base_commit, spec.branch, rt.worktree_of(row))
        payload: Any = spec.fresh
        if spec.resume is not None:
            payload = Command(resume=spec.resume)
        cfg = rt.attempt_cfg(spec.attempt_id)
        try:
            rt.attempt_graph.invoke(payload, cfg)
        except KeyboardInterrupt:  # ray.cancel: stop the agent and its sandbox, leave the step unfinished
            rt.cancel_all()
            raise
        snap = rt.attempt_graph.get_state(cfg)
        finished = not snap.next and not snap.interrupts
        head, bundle = attempt_bundle(repo, spec.branch, spec.base_commit) if finished else (None, None)
    finally:
        rt.close()
        store.dispose()
    if finished:  # its branch goes back in the bundle: nothing of it stays on this node
        from loopmeter.hostgit import remove_path

        remove_path(place)
    return {"finished": finished, "head": head, "bundle": bundle, "node": socket.gethostname()}


# -- the driver: the attempt's commits coming back ---------------------------------------------

def bundle_refs(data: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """(prerequisite shas, [(sha, ref)]) from a bundle's header, read by loopmeter (v2 or v3)."""
    end = data.find(b"\n\n", 0, 1 << 20)
    if end < 0:
        raise BundleRefused("the attempt's bundle has no header (not a git bundle)")
    try:
        lines = data[:end].decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise BundleRefused("the attempt's bundle header is not ASCII") from None
    if lines[0] not in ("# v2 git bundle", "# v3 git bundle"):
        raise BundleRefused("the attempt's bundle is not a git bundle (v2 or v3)")
    prereqs: list[str] = []
    refs: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line.startswith("@"):  # v3 capabilities
            if line not in ("@object-format=sha1", "@object-format=sha256"):
                raise BundleRefused(f"the attempt's bundle asks for {line[:80]!r}")
            continue
        if line.startswith("-"):
            sha = line[1:].split(" ", 1)[0]
            if not _SHA.match(sha):
                raise BundleRefused("the attempt's bundle has a malformed prerequisite")
            prereqs.append(sha)
            continue
        sha, _, ref = line.partition(" ")
        if not _SHA.match(sha) or not ref:
            raise BundleRefused("the attempt's bundle has a malformed ref line")
        refs.append((sha, ref))
    return prereqs, refs


def import_attempt(repo: Path, branch: str, base_commit: str, head: str | None, data: bytes | None) -> str:
    """Take a worker's attempt commits into `repo` as `refs/heads/<branch>`; returns the branch head.

    Refused (BundleRefused, one line): over the size limit, any ref but the attempt's branch, more
    than one ref, a head other than the one reported, objects git will not verify, a head that does
    not descend from the base commit."""
    from loopmeter.hostgit import GitError, HostGit, repo_layout

    git = HostGit(repo_layout(repo))
    want = f"refs/heads/{branch}"
    if data is None:  # nothing committed: the branch is the base commit, as a local attempt's would be
        if head not in (None, base_commit):
            raise BundleRefused(f"the worker reported head {str(head)[:12]} for {branch} but sent no commits")
        git("update-ref", want, base_commit)
        return base_commit
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleRefused(f"the attempt's bundle is {len(data) >> 20} MiB, over the {MAX_BUNDLE_BYTES >> 20} MiB "
                            "limit")
    _, refs = bundle_refs(data)
    others = [ref for _, ref in refs if ref != want]
    if others:
        shown = ", ".join(r[:100] for r in others[:3])
        raise BundleRefused(f"the attempt's bundle holds refs other than {want}: {shown}")
    if len(refs) != 1:
        raise BundleRefused(f"the attempt's bundle holds {len(refs)} refs, not the one branch {want}")
    if refs[0][0] != head:
        raise BundleRefused(f"the attempt's bundle puts {want} at {refs[0][0][:12]}, not at the reported head")
    tmp = Path(tempfile.mkdtemp(prefix="loopmeter-bundle-"))
    try:
        path = tmp / "attempt.bundle"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            git(*BUNDLE_GIT, "bundle", "verify", "-q", str(path))
            git(*BUNDLE_GIT, "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
                str(path), f"+{want}:{want}")
        except GitError as exc:
            raise BundleRefused(f"git refused the attempt's bundle: {exc.stderr.splitlines()[-1] if exc.stderr else exc}"
                                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    got = git("rev-parse", "--verify", f"{want}^{{commit}}").strip()
    try:
        git("merge-base", "--is-ancestor", base_commit, got)
    except GitError:
        git("update-ref", "-d", want, check=False)
        raise BundleRefused(f"the attempt's branch {branch} does not descend from the base commit "
                            f"{base_commit[:12]}") from None
    return got


def attempt_spec(rt: _Runtime, attempt_id: str, payload: Any, base: tuple[str, str], task_sha: str | None,
                 store_url: str) -> AttemptSpec:
    """The spec of one attempt of the run `rt` drives (payload: the attempt graph's input)."""
    from loopmeter.policies import policy_content
    from loopmeter.store import Attempt

    row = rt.store.get(Attempt, attempt_id)
    if row is None:
        raise LoopmeterError(f"no attempt {attempt_id}")
    resume = getattr(payload, "resume", None) if payload is not None and not isinstance(payload, dict) else None
    sqlite = rt.store.engine.url.get_backend_name() == "sqlite"
    return AttemptSpec(
        run_id=rt.run_id, attempt_id=attempt_id, branch=row.branch, base_commit=row.base_commit,
        base_ref=base[0], base_sha=base[1], store_url=store_url, task_sha=task_sha,
        policy=policy_content(rt.config.get("policy_ref") or "", rt.policy),
        checkpoint_path=str(rt.settings.checkpoint_path) if sqlite else None,
        resume=bool(resume) if resume is not None else None,
        fresh=payload if isinstance(payload, dict) else None)
