"""The sandbox self-test: every denial is paired with a positive control, so a broken probe
cannot pass by failing everything. Used by `loopmeter sandbox doctor` and by CI as a test."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loopmeter.policies import Policy, parse_policy
from loopmeter.sandbox.gitprobe import git_dirs_read_only, host_git_not_redirected

SELFTEST_POLICY = """\
name: selftest
description: the self-test's own policy (no network except what a check allows for itself)
limits: {wall_s: 20, cpu_s: 2, memory_mb: 512, pids: 64, file_size_mb: 16, output_kb: 1024}
"""
CANARY_VAR = "LOOPMETER_SELFTEST_API_KEY"


@dataclass
class Check:
    name: str
    denial: str  # what must be refused, and what happened
    control: str  # the positive control, and what happened
    ok: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"selftest-ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _py(code: str) -> list[str]:
    return ["python3", "-I", "-S", "-c", code]


def run_selftest(runner: Any, audit_count: Callable[[], int] | None = None) -> list[Check]:
    """Run every check with `runner` (from make_runner("bwrap", store=...)). Takes a few seconds."""
    policy = parse_policy(SELFTEST_POLICY, Path("<selftest>"))
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="lm-selftest-") as tmp:
        base = Path(tmp)
        home, work = base / "home", base / "work"
        (home / ".ssh").mkdir(parents=True)
        work.mkdir()
        secret = home / ".ssh" / "id_ed25519"
        secret.write_text("SELFTEST-PRIVATE-KEY\n")
        canary = "sk-canary-" + uuid.uuid4().hex
        with _env(HOME=str(home), **{CANARY_VAR: canary, "ANTHROPIC_API_KEY": canary}):
            for fn in (_fs_write, _home_secret, _host_loopback, _proxy, _dns, _caps, _fork_bomb, _cpu_and_sleeper,
                       _env_canary, git_dirs_read_only, host_git_not_redirected):
                try:
                    checks.append(fn(runner, policy, work, secret, canary, audit_count))
                except Exception as exc:  # noqa: BLE001 - a crashed check is a failed check
                    checks.append(Check(fn.__name__.strip("_").replace("_", "-"), f"error: {exc}", "-", False))
    return checks


def _run(runner: Any, policy: Policy, work: Path, argv: list[str], **kw: Any) -> Any:
    return runner.run(argv, workdir=work, policy=policy, role=kw.pop("role", "check"),
                      actor=kw.pop("actor", "check"), **kw)


def _fs_write(runner: Any, policy: Policy, work: Path, *_: Any) -> Check:
    sibling = work.parent / "outside.txt"  # a host directory beside the workdir
    res = _run(runner, policy, work, ["sh", "-c", "echo x > /etc/lm-selftest 2>/dev/null && echo WROTE-OUTSIDE; "
                                                  f"echo x > {sibling} 2>/dev/null; "
                                                  "echo inside > inside.txt && echo WROTE-INSIDE"])
    outside_refused = ("WROTE-OUTSIDE" not in res.stdout and not Path("/etc/lm-selftest").exists()
                       and not sibling.exists())
    inside_ok = "WROTE-INSIDE" in res.stdout and (work / "inside.txt").read_text().strip() == "inside"
    return Check("write-outside-workdir",
                 f"write /etc and beside the workdir: {'nothing reached the host' if outside_refused else 'ALLOWED'}",
                 f"write inside workdir: {'ok' if inside_ok else 'FAILED'}", outside_refused and inside_ok)


def _home_secret(runner: Any, policy: Policy, work: Path, secret: Path, *_: Any) -> Check:
    link = work / "innocent-link"
    link.symlink_to(secret)
    (work / "plain.txt").write_text("plain\n")
    res = _run(runner, policy, work, ["sh", "-c", f"cat {secret} innocent-link 2>/dev/null; cat plain.txt"])
    link.unlink()
    leaked = "SELFTEST-PRIVATE-KEY" in res.stdout
    control = "plain" in res.stdout
    return Check("home-secret", f"read ~/.ssh key directly and via a workdir symlink: {'LEAKED' if leaked else 'refused'}",
                 f"read a workdir file: {'ok' if control else 'FAILED'}", not leaked and control)


def _host_loopback(runner: Any, policy: Policy, work: Path, *_: Any) -> Check:
    with _http_server() as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            host_ok = True
        code = f"import socket\ntry:\n socket.create_connection(('127.0.0.1',{port}),timeout=3); print('CONNECTED')\n" \
               f"except OSError as e: print('REFUSED', e.errno)"
        res = _run(runner, policy, work, _py(code))
    refused = "REFUSED" in res.stdout
    return Check("host-loopback", f"connect to host 127.0.0.1:{port} from inside: "
                                  f"{'refused' if refused else res.stdout.strip() or res.stderr.strip()[:80]}",
                 f"same listener from the host: {'ok' if host_ok else 'FAILED'}", refused and host_ok)


def _proxy(runner: Any, policy: Policy, work: Path, _s: Any, _c: Any, audit_count: Callable[[], int] | None) -> Check:
    before = audit_count() if audit_count else 0
    with _http_server() as port:
        code = ("import urllib.request as u, urllib.error as e\n"
                f"for url in ('http://127.0.0.1:{port}/', 'http://blocked.example/'):\n"
                " try: print(url, u.urlopen(url, timeout=10).status)\n"
                " except e.HTTPError as x: print(url, x.code)\n"
                " except Exception as x: print(url, 'ERR', x)\n")
        res = _run(runner, policy, work, _py(code), extra_allow=[f"127.0.0.1:{port}"])
    allowed = f"http://127.0.0.1:{port}/ 200" in res.stdout
    denied = "http://blocked.example/ 403" in res.stdout
    proxy_denials = [d for d in res.denials if d["layer"] == "proxy" and d["target"] == "blocked.example:80"]
    audited = audit_count is None or audit_count() - before >= 2
    return Check("egress-proxy",
                 f"blocked.example through the proxy: {'403' if denied else 'NOT 403'}, "
                 f"{'audited' if proxy_denials and audited else 'NOT audited'}",
                 f"allowlisted 127.0.0.1:{port} through the proxy: {'200' if allowed else 'FAILED'}",
                 allowed and denied and bool(proxy_denials) and audited)


def _dns(runner: Any, policy: Policy, work: Path, *_: Any) -> Check:
    code = ("import socket\nfor h in ('example.com','localhost'):\n"
            " try: socket.getaddrinfo(h, 80); print(h, 'RESOLVED')\n"
            " except OSError as e: print(h, 'FAILED', e)\n")
    res = _run(runner, policy, work, _py(code))
    dns_failed = "example.com FAILED" in res.stdout
    local_ok = "localhost RESOLVED" in res.stdout
    return Check("dns", f"resolve example.com: {'fails' if dns_failed else 'RESOLVED'}",
                 f"resolve localhost (/etc/hosts): {'ok' if local_ok else 'FAILED'}", dns_failed and local_ok)


def _cap_eff(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return line.split()[1]
    return None


def _caps(runner: Any, policy: Policy, work: Path, *_: Any) -> Check:
    res = _run(runner, policy, work, ["cat", "/proc/self/status"])
    inside = _cap_eff(res.stdout)
    host = _cap_eff(Path("/proc/self/status").read_text())
    ok = inside is not None and int(inside, 16) == 0
    return Check("capabilities", f"CapEff inside: {inside}", f"CapEff read on the host: {host}",
                 ok and host is not None)


def _pids_limit_enforceable(policy: Policy) -> bool:
    from loopmeter.sandbox.limits import make_cgroup

    cg = make_cgroup(policy.model.limits)
    if cg is not None:
        has = "pids" in cg.dirs
        cg.remove()
        if has:
            return True
    return os.geteuid() != 0  # RLIMIT_NPROC works for ordinary users, never for root


def _fork_bomb(runner: Any, policy: Policy, work: Path, *_: Any) -> Check:
    if getattr(runner, "kind", "") == "bwrap" and not _pids_limit_enforceable(policy):
        return Check("fork-bomb", "not run: no cgroup pids controller here and RLIMIT_NPROC is ignored for root",
                     "-", False)
    start = time.monotonic()
    res = _run(runner, policy, work, ["sh", "-c", "b(){ b|b& }; b; sleep 1; echo host-still-fine"], timeout_s=8)
    contained = time.monotonic() - start < 15 and (any(d["rule_id"] == "limits.pids" for d in res.denials)
                                                   or res.timed_out)
    ctl = _run(runner, policy, work, ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 0.05 & done; wait; echo spawned"])
    control = "spawned" in ctl.stdout
    how = "pids limit hit" if any(d["rule_id"] == "limits.pids" for d in res.denials) else (
        "killed at wall clock" if res.timed_out else "NOT contained")
    return Check("fork-bomb", f"fork bomb: {how}", f"8 child processes: {'ok' if control else 'FAILED'}",
                 contained and control)


def _leftovers(marker: str) -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if marker in line)


def _cpu_total_enforceable(policy: Policy) -> bool:
    from loopmeter.sandbox.limits import make_cgroup

    cg = make_cgroup(policy.model.limits)
    if cg is None:
        return False
    cg.remove()
    return cg.cpu_file is not None


def _cpu_and_sleeper(runner: Any, policy: Policy, work: Path, *_: Any) -> Check:
    marker = str(3000 + uuid.uuid4().int % 900)
    limit = policy.model.limits.cpu_s or 2
    if getattr(runner, "kind", "") == "bwrap" and _cpu_total_enforceable(policy):
        # three processes, each stopping by itself under cpu_s, over it together: the cgroup's total stops them
        burn = f"import time\nwhile time.process_time() < {limit * 0.75}: pass"
        cpu = _run(runner, policy, work, ["sh", "-c", " ".join([f"python3 -I -S -c '{burn}' &"] * 3)
                                          + " wait; echo all-done"])
        what = (f"3 CPU burners of {limit * 0.75:g} s each (limit {limit} s for the sandbox): "
                f"{'killed at the total' if cpu.killed_reason == 'cpu' and 'all-done' not in cpu.stdout else 'NOT killed'}")
    else:
        cpu = _run(runner, policy, work, ["sh", "-c", "while :; do :; done"])
        what = (f"CPU burner: {cpu.killed_reason or 'NOT killed'} (per process only: no cgroup can be made "
                "here, so processes together are not bounded)")
    sleeper = _run(runner, policy, work, ["sh", "-c", f"sleep {marker} & sleep {marker}"], timeout_s=1)
    time.sleep(0.1)
    left = _leftovers(f"sleep {marker}")
    ctl = _run(runner, policy, work, ["sh", "-c", "sleep 0.1; echo done"], timeout_s=5)
    ok = (cpu.killed_reason == "cpu" and "all-done" not in cpu.stdout and sleeper.exit_code == 124 and left == 0
          and ctl.exit_code == 0)
    return Check("cpu-and-wall-clock",
                 f"{what} (exit {cpu.exit_code}); sleeper: exit {sleeper.exit_code}; processes left: {left}",
                 f"short sleep under the same limits: exit {ctl.exit_code}", ok)


def _env_canary(runner: Any, policy: Policy, work: Path, _s: Any, canary: str, *_: Any) -> Check:
    res = _run(runner, policy, work, ["sh", "-c", "env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'"],
               env={"LOOPMETER_SELFTEST_VISIBLE": "yes"})
    leaked = canary in res.stdout
    control = "LOOPMETER_SELFTEST_VISIBLE=yes" in res.stdout
    return Check("env-canary", f"host canary {CANARY_VAR}/ANTHROPIC_API_KEY inside: {'LEAKED' if leaked else 'absent'}",
                 f"a variable the caller passes: {'visible' if control else 'MISSING'}", not leaked and control)
