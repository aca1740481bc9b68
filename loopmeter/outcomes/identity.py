"""A repository's identity: the one string a session, a loop run and a pull request share.

    repo_identity("git@github.com:Owner/Repo.git")        -> "github.com/owner/repo"
    repo_identity("https://tok@GitHub.com/owner/repo/")   -> "github.com/owner/repo"
    repo_identity("/home/dev/repo")                       -> "/home/dev/repo" (resolved)

A remote URL (https, http, ssh, git, scp-like `user@host:path`) becomes `host/path`:
lowercased, without credentials, port, query, fragment, `.git` or trailing `/`, so the
forms one repository is cloned by agree. Anything else is a local path, made absolute
and resolved. `safe_url` is a URL as it may be stored: without credentials.

`find_checkout(cwd)` finds the git checkout holding a working directory from the files
alone (no git process; the repository is hostile input): it walks up to the nearest
`.git` that is not a link, accepts it through `hostgit.checkout_layout`, and reads the
`origin` remote's URL from its config as plain text (`hostgit.origin_url`).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MAX_URL = 2048
_SCHEMES = ("https", "http", "ssh", "git", "git+ssh", "ssh+git")
# scp-like syntax: [user@]host:path, where the host has no "/" (git's own rule)
_SCP = re.compile(r"^(?:(?P<user>[^@/\s]+)@)?(?P<host>[A-Za-z0-9._-]+):(?P<path>(?!//).+)$")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class _Remote:
    host: str
    path: str
    scheme: str | None  # None: scp-like
    user: str | None
    port: int | None = None


def _remote(url: str) -> _Remote | None:
    """A remote URL's parts, or None when `url` is not one (a local path, or not usable)."""
    if not url or len(url) > MAX_URL or _UNSAFE.search(url):
        return None
    if "://" in url:
        try:
            parts = urlsplit(url)
            port = parts.port  # raises on a malformed port
        except ValueError:
            return None
        if parts.scheme.lower() not in _SCHEMES or not parts.hostname:
            return None
        return _Remote(parts.hostname.lower(), parts.path, parts.scheme.lower(), parts.username, port)
    m = _SCP.match(url)
    if m is None or os.path.isabs(url) or len(m["host"]) < 2:
        return None  # "C:\\..." and "./x:y" are paths
    return _Remote(m["host"].lower(), m["path"], None, m["user"])


def _clean_path(path: str) -> str:
    path = path.split("?", 1)[0].split("#", 1)[0].strip("/")
    if path.startswith("~"):
        path = path[1:].lstrip("/")
    path = re.sub(r"/+", "/", path)
    return path.removesuffix(".git").rstrip("/")


def repo_identity(url_or_path: str) -> str:
    """The identity of the repository at a remote URL (`host/path`, lowercased, no credentials)
    or of a local checkout (its absolute, resolved path)."""
    text = url_or_path.strip()
    if text.lower().startswith("file://"):
        return os.path.realpath(urlsplit(text).path or "/")
    remote = _remote(text)
    if remote is None:
        return os.path.realpath(os.path.expanduser(text))
    return f"{remote.host}/{_clean_path(remote.path).lower()}"


def is_remote(url_or_path: str) -> bool:
    return _remote(url_or_path.strip()) is not None


def safe_url(url: str) -> str | None:
    """A remote URL as it may be stored: without user and password (a token is often one of
    them; only ssh's usual `git@` is kept), query or fragment. None when it is not a remote URL."""
    remote = _remote(url.strip())
    if remote is None:
        return None
    path = "/" + _clean_path(remote.path)
    if remote.scheme is None:
        user = "git@" if remote.user == "git" else ""
        return f"{user}{remote.host}:{path.lstrip('/')}.git"
    user = "git@" if remote.scheme not in ("https", "http") and remote.user == "git" else ""
    port = f":{remote.port}" if remote.port else ""
    return f"{remote.scheme}://{user}{remote.host}{port}{path}"


@dataclass(frozen=True)
class Checkout:
    """The git checkout a working directory is in."""

    top: str  # the repository's top level (a linked worktree's main checkout, when it has one)
    origin: str | None  # the `origin` remote's URL without credentials, when the config names one

    @property
    def identity(self) -> str:
        return repo_identity(self.origin or self.top)


MAX_DEPTH = 64


def find_checkout(cwd: str) -> Checkout | None:
    """The checkout holding `cwd` (an absolute path from a log), found from its files alone:
    the nearest `.git` walking up (a link named `.git` ends the search), accepted only when
    `hostgit.checkout_layout` accepts it. None when there is none, or `cwd` is not absolute."""
    from loopmeter import hostgit

    if not cwd or not os.path.isabs(cwd) or len(cwd) > 4096 or "\x00" in cwd:
        return None
    folder = Path(os.path.normpath(cwd))
    for candidate in [folder, *folder.parents][:MAX_DEPTH]:
        try:
            mode = os.lstat(candidate / ".git").st_mode
        except OSError:
            continue
        if stat.S_ISLNK(mode):
            return None
        layout = hostgit.checkout_layout(candidate)
        if layout is None:
            return None
        common = layout.common_dir
        top = common.parent if common.name == ".git" else layout.work_tree
        url = hostgit.origin_url(layout)
        return Checkout(str(top), safe_url(url) if url else None)
    return None
