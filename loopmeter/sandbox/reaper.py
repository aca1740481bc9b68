"""A reaper between the runner and an unsandboxed command: its whole process tree dies with loopmeter.

bubblewrap gives a sandboxed command `--die-with-parent` and a PID namespace of its own. `--sandbox
none` has neither, so `UnsandboxedRunner` starts the command through this file, run as a separate
program (`python -I -S reaper.py CTL STATUS PARENT -- COMMAND...`). That process, the anchor, dies
with the runner (`PR_SET_PDEATHSIG`) and forks the reaper, which:

- marks itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so every process of the command's tree
  whose parent dies is re-parented to it rather than to init: a double fork or a `setsid` does not
  leave the tree (only a PID namespace, as in bubblewrap, would be stronger);
- watches the read end of a pipe (CTL) whose write end only the runner holds: end-of-file means the
  runner closed it (timeout, cancel, the command is over) or the runner's process died, however it died
  (SIGKILL included: the kernel closes its descriptors). The anchor's death is a second trigger
  (`PR_SET_PDEATHSIG`, SIGTERM): Ray SIGKILLs a worker's direct children when the worker exits (a
  force-cancelled task), which would otherwise kill the reaper itself before it could act;
- then SIGKILLs every process under it (found in /proc by parent pid, again until none is left) and
  exits with the command's status (128 + N when a signal N ended it), which the anchor passes on, so
  the runner sees what it saw when it ran the command itself. When the command ends first, what it
  left running is killed too.

It is a separate program rather than `preexec_fn` because the runner is multi-threaded (prctl or fork
in a forked child of a threaded process is not safe); it is Python so that nothing needs compiling,
and costs one interpreter start per command (docs/security.md). Where prctl or /proc is missing (not
Linux), the command still dies with the runner, but only its own process group is killed.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

TYPE_CHECKING = False  # typing itself is not imported: the reaper starts once per command
if TYPE_CHECKING:
    import subprocess

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
START_FAILED = 125  # the reaper's exit code when the command could not be started (the reason is on STATUS)


def helper_argv(ctl_fd: int, status_fd: int, command: list[str]) -> list[str]:
    """The argv that runs `command` under a reaper reading `ctl_fd` and reporting a start failure on `status_fd`."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(ctl_fd), str(status_fd),
            str(os.getpid()), "--", *command]


class Reaper:
    """The runner's side of one reaper: `argv` and `pass_fds` to start it with, `started` once it runs
    (it learns whether the command itself started), `kill_tree` to end the command's whole tree."""

    def __init__(self, command: list[str]):
        self._ctl_r, self._ctl_w = os.pipe()
        self._status_r, self._status_w = os.pipe()
        self._open = {self._ctl_r, self._ctl_w, self._status_r, self._status_w}
        self.argv = helper_argv(self._ctl_r, self._status_w, command)
        self.pass_fds = (self._ctl_r, self._status_w)
        self.start_error: str | None = None  # why the command could not start
        self._proc: subprocess.Popen | None = None

    def started(self, proc: subprocess.Popen) -> None:
        """Called right after the reaper started: waits until it has started the command (or failed to)."""
        self._proc = proc
        self._close(self._ctl_r, self._status_w)
        text = b""
        while len(text) < 4096:
            chunk = os.read(self._status_r, 4096)
            if not chunk:
                break
            text += chunk
        self._close(self._status_r)
        if text:
            self.start_error = text.decode("utf-8", "replace")

    def kill_tree(self, wait_s: float = 5.0) -> None:
        """Kill everything the command started (nothing, when the reaper already ended) and wait for it."""
        import subprocess

        self._close(self._ctl_w)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        self._close(*list(self._open))

    def _close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self._open:
                self._open.discard(fd)
                os.close(fd)


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def _children_by_parent() -> dict[int, list[int]] | None:
    """parent pid -> pids of its living children (zombies left out), from /proc/*/stat; None without /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    found: dict[int, list[int]] = {}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm is the process's own choice, so split after its last ')'
        fields = stat.rpartition(b")")[2].split()
        if len(fields) > 1 and fields[0] != b"Z":
            found.setdefault(int(fields[1]), []).append(int(name))
    return found


def _descendants(root: int) -> list[int] | None:
    tree = _children_by_parent()
    if tree is None:
        return None
    out, todo = [], [root]
    while todo:
        for child in tree.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def _reap(command: int, status: dict[str, int]) -> bool:
    """Collect every exited child (orphans are ours to collect too); note the command's exit status.
    False once this process has no children left at all."""
    while True:
        try:
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        if pid == command:
            status["code"] = os.waitstatus_to_exitcode(wstatus)


def _kill_all(command: int, status: dict[str, int]) -> None:
    """SIGKILL everything under this process until nothing is left: killed processes' children are
    re-parented here and killed on the next round. A process this user may not signal (a set-user-ID
    program) is left as it is, rather than waited for."""
    me = os.getpid()
    pause = 0.0005
    while True:
        pids = _descendants(me)
        if pids is None:  # no /proc: the command's process group is all that can be found
            try:
                os.kill(command, signal.SIGKILL)
                os.killpg(os.getpgrp(), signal.SIGKILL)  # the anchor and this process too
            except OSError:
                pass
            pids = []
        signalled = False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                signalled = True
            except PermissionError:
                pass
            except OSError:
                signalled = True  # gone meanwhile
        if not _reap(command, status) or (pids and not signalled):
            return
        time.sleep(pause)  # SIGKILL is asynchronous: look again once the kernel had time to act
        pause = min(pause * 2, 0.01)


def _exit_code(wstatus: int) -> int:
    code = os.waitstatus_to_exitcode(wstatus)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    """The anchor: the runner's direct child. It dies with the runner's thread (PR_SET_PDEATHSIG) and
    only waits for the reaper it forks, so whoever kills the runner's direct children (Ray does, when a
    worker exits) kills a process whose death the reaper hears of."""
    ctl, status_fd, parent = int(argv[1]), int(argv[2]), int(argv[3])
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the runner died before PR_SET_PDEATHSIG was set
        return 128 + signal.SIGKILL
    anchor = os.getpid()
    reaper = os.fork()  # safe: this process has one thread
    if reaper == 0:
        os._exit(_reaper(ctl, status_fd, anchor, argv[5:]))
    os.close(ctl)
    os.close(status_fd)  # the reaper's copy alone tells the runner whether the command started
    return _exit_code(os.waitpid(reaper, 0)[1])


def _reaper(ctl: int, status_fd: int, anchor: int, command: list[str]) -> int:
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            stop["now"] = True

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != anchor:  # the anchor died before PR_SET_PDEATHSIG was set
        return 128 + signal.SIGKILL
    os.set_inheritable(ctl, False)
    os.set_inheritable(status_fd, False)
    try:
        child = os.posix_spawnp(command[0], command, os.environ)
    except OSError as exc:
        os.write(status_fd, str(exc).encode("utf-8", "replace"))
        return START_FAILED
    os.close(status_fd)
    status: dict[str, int] = {}
    while "code" not in status and not stop["now"]:
        ready, _, _ = select.select([ctl, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(child, status)
        if ctl in ready and not os.read(ctl, 64):
            break  # end-of-file: the runner asked, or it died
    _kill_all(child, status)
    code = status.get("code", -signal.SIGKILL)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
