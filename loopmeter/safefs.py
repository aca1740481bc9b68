"""Files under a root that hostile code could have written: never follow a link, never leave the root.

loopmeter copies a task's tests into a worktree before a check and takes them out again
afterwards, copies a task's repo and solution, and cleans caches. Sandboxed code (an agent,
a check) can replace anything in a worktree with a symbolic link between two of those
steps, and a task directory is somebody else's input. So every path here is *relative to a
root directory loopmeter chose* (a worktree it made, a temp dir, a task directory), and:

- each component below the root is opened with `O_NOFOLLOW` relative to its parent's file
  descriptor: a symbolic link where a directory is needed is refused (`UnsafePath`), even
  one swapped in a moment earlier;
- a file or link is written to a temporary name and renamed over the final name, and a
  removal unlinks the name itself: a link in the final position is replaced or removed, its
  target never touched;
- relative paths with `..`, `.`, absolute paths or NUL bytes are refused before any I/O;
- when a tree is copied, a symbolic link in the source is copied as a link (never followed),
  and anything that is not a file, a directory or a link (a FIFO, a device) is refused.

Only the root itself is resolved normally: it comes from loopmeter, not from the tree.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from loopmeter.errors import LoopmeterError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# a file swapped for a FIFO between lstat and open must not block the read
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class UnsafePath(LoopmeterError):
    """A path under a root is a symbolic link where a directory must be, or leaves the root."""


@dataclass(frozen=True)
class Node:
    """What is at a path, read without following it: a file's bytes and mode, or a link's target."""

    kind: str  # "file" or "link"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""


def parts_of(rel: str | PurePosixPath) -> tuple[str, ...]:
    """The components of a path relative to a root; `..`, `.`, absolute paths and NUL are refused."""
    text = str(rel)
    if "\0" in text:
        raise UnsafePath(f"{text!r}: a path may not contain a NUL byte")
    if text.startswith("/"):
        raise UnsafePath(f"{text}: an absolute path where a path inside the folder was expected")
    parts = tuple(p for p in text.split("/") if p)
    if not parts or any(p in (".", "..") for p in parts):
        raise UnsafePath(f"{text!r}: not a plain path inside the folder (no '..', '.' or empty path)")
    return parts


def _shown(root: Path, parts: tuple[str, ...]) -> Path:
    return Path(root).joinpath(*parts)


def _refusal(root: Path, parts: tuple[str, ...], dir_fd: int, name: str) -> UnsafePath:
    """Why `name` could not be opened as a directory: a symbolic link, or not a directory."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    what = ("is a symbolic link; loopmeter does not follow links inside a folder it writes to"
            if stat.S_ISLNK(mode) else "is not a directory")
    return UnsafePath(f"{_shown(root, parts)} {what}",
                      hint="a sandboxed command (an agent or a check) or the task put it there; remove it")


def _open_dir(root: Path, parts: tuple[str, ...], *, create: bool = False,
              made: list[str] | None = None) -> int | None:
    """A descriptor for root/parts, every component opened without following links.

    Missing directories are made when `create` (their relative paths appended to `made`),
    else None is returned. A link or a file on the way raises UnsafePath."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                os.mkdir(name, 0o755, dir_fd=fd)
                if made is not None:
                    made.append("/".join(parts[: i + 1]))
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refusal(root, parts[: i + 1], fd, name) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def _parent(root: Path, rel: str | PurePosixPath, *, create: bool = False,
            made: list[str] | None = None) -> Iterator[tuple[int | None, str, tuple[str, ...]]]:
    """(descriptor of the parent directory or None if it is missing, final name, all parts)."""
    parts = parts_of(rel)
    fd = _open_dir(root, parts[:-1], create=create, made=made)
    try:
        yield fd, parts[-1], parts
    finally:
        if fd is not None:
            os.close(fd)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _open_regular(name: str, dir_fd: int) -> int:
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{name} stopped being a regular file while loopmeter read it")
    return fd


def read(root: Path, rel: str | PurePosixPath) -> Node | None:
    """The file or link at root/rel (not followed); None when nothing, or a directory, is there."""
    with _parent(root, rel) as (pfd, name, _):
        if pfd is None:
            return None
        st = _lstat(name, pfd)
        if st is None or stat.S_ISDIR(st.st_mode):
            return None
        if stat.S_ISLNK(st.st_mode):
            return Node("link", target=os.readlink(name, dir_fd=pfd))
        if not stat.S_ISREG(st.st_mode):
            return None
        fd = _open_regular(name, pfd)
        try:
            return Node("file", data=_read_fd(fd), mode=stat.S_IMODE(os.fstat(fd).st_mode))
        finally:
            os.close(fd)


def _put(root: Path, rel: str | PurePosixPath, node: Node | None, src: tuple[int, str] | None,
         made: list[str] | None) -> None:
    """Write `node` (or copy the regular file `src` = (dir fd, name)) at root/rel by rename."""
    with _parent(root, rel, create=True, made=made) as (pfd, name, parts):
        assert pfd is not None
        existing = _lstat(name, pfd)
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise UnsafePath(f"{_shown(root, parts)} is a directory; loopmeter will not put a file in its place",
                             hint="a sandboxed command or the task put a directory where a file belongs")
        tmp = f".{name[:200]}.loopmeter-{secrets.token_hex(6)}"
        try:
            if node is not None and node.kind == "link":
                os.symlink(node.target, tmp, dir_fd=pfd)
            else:
                mode = node.mode if node is not None else 0o644
                in_fd = None
                if src is not None:
                    in_fd = _open_regular(src[1], src[0])
                    mode = stat.S_IMODE(os.fstat(in_fd).st_mode)
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=pfd)
                try:
                    if in_fd is not None:
                        while chunk := os.read(in_fd, _CHUNK):
                            os.write(out, chunk)
                    elif node is not None:
                        view = memoryview(node.data)
                        while view:
                            view = view[os.write(out, view):]
                    os.fchmod(out, mode & 0o7777)
                finally:
                    os.close(out)
                    if in_fd is not None:
                        os.close(in_fd)
            os.replace(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=pfd)
            except OSError:
                pass
            raise


def write(root: Path, rel: str | PurePosixPath, node: Node, made: list[str] | None = None) -> None:
    """Put `node` at root/rel: missing directories are made (listed in `made`), a file or link
    already there is replaced (a link itself, never its target), a directory there is refused."""
    _put(root, rel, node, None, made)


def remove(root: Path, rel: str | PurePosixPath) -> bool:
    """Remove root/rel (a file, a link itself, or a whole directory tree) if it is there.

    Returns whether something was removed. A link among the parents raises UnsafePath:
    whatever it points at is not under the root."""
    with _parent(root, rel) as (pfd, name, _):
        if pfd is None:
            return False
        st = _lstat(name, pfd)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            _remove_tree(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)
        return True


def _remove_tree(parent_fd: int, name: str) -> None:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def make_dirs(root: Path, rel: str | PurePosixPath, made: list[str] | None = None) -> None:
    """Make root/rel and its missing parents (listed in `made`); a link on the way is refused."""
    fd = _open_dir(root, parts_of(rel), create=True, made=made)
    assert fd is not None
    os.close(fd)


def walk(root: Path, rel: str | PurePosixPath = "") -> Iterator[tuple[str, str]]:
    """(relative path, kind) for everything under root/rel, parents before children, sorted by name.

    kind is "dir", "file" or "link"; links are reported, never entered. Anything else (a FIFO,
    a socket, a device) raises UnsafePath. A missing root/rel yields nothing."""
    base = parts_of(rel) if str(rel) not in ("", ".") else ()
    fd = _open_dir(root, base)
    if fd is None:
        return
    yield from _walk_fd(root, fd, base)


def _walk_fd(root: Path, fd: int, parts: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    try:
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            sub = (*parts, entry.name)
            if entry.is_symlink():
                yield "/".join(sub), "link"
            elif entry.is_dir(follow_symlinks=False):
                yield "/".join(sub), "dir"
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _refusal(root, sub, fd, entry.name) from None
                    raise
                yield from _walk_fd(root, child, sub)
            elif entry.is_file(follow_symlinks=False):
                yield "/".join(sub), "file"
            else:
                raise UnsafePath(f"{_shown(root, sub)} is not a file, directory or link; loopmeter will not copy it")
    finally:
        os.close(fd)


def copy_file(src_root: Path, src_rel: str, dest_root: Path, dest_rel: str,
              made: list[str] | None = None) -> None:
    """Copy the file or link src_root/src_rel to dest_root/dest_rel, following no link on either side."""
    with _parent(src_root, src_rel) as (sfd, name, parts):
        st = _lstat(name, sfd) if sfd is not None else None
        if sfd is None or st is None:
            raise UnsafePath(f"{_shown(src_root, parts)} vanished while it was being copied")
        if stat.S_ISLNK(st.st_mode):
            _put(dest_root, dest_rel, Node("link", target=os.readlink(name, dir_fd=sfd)), None, made)
        elif stat.S_ISREG(st.st_mode):
            _put(dest_root, dest_rel, None, (sfd, name), made)
        else:
            raise UnsafePath(f"{_shown(src_root, parts)} is not a file or link; loopmeter will not copy it")


def copy_tree(src: Path, dest_root: Path, dest_rel: str = "") -> list[str]:
    """Copy everything under `src` into dest_root/dest_rel; return the paths (relative to
    dest_root) of the files and links written. Links in `src` are copied as links."""
    prefix = "/".join(parts_of(dest_rel)) + "/" if dest_rel else ""
    written: list[str] = []
    if prefix:
        make_dirs(dest_root, prefix)
    for rel, kind in walk(src):
        if kind == "dir":
            make_dirs(dest_root, prefix + rel)
        else:
            copy_file(src, rel, dest_root, prefix + rel)
            written.append(prefix + rel)
    return written


def remove_dirs_named(root: Path, rel: str, names: frozenset[str]) -> None:
    """Remove every directory (or link) called one of `names` under root/rel, entering no link."""
    try:
        found = [path for path, _ in walk(root, rel) if path.rsplit("/", 1)[-1] in names]
    except UnsafePath:
        return  # root/rel itself is a link: nothing of ours is in there
    for path in found:
        if not any(path.startswith(other + "/") for other in found):
            try:
                remove(root, path)
            except (UnsafePath, FileNotFoundError):
                pass


def is_empty_dir(root: Path, rel: str) -> bool:
    """Whether root/rel is a real (not linked) directory with nothing in it."""
    try:
        fd = _open_dir(root, parts_of(rel))
    except UnsafePath:
        return False
    if fd is None:
        return False
    try:
        with os.scandir(fd) as it:
            return next(it, None) is None
    finally:
        os.close(fd)
