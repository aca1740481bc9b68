"""The bubblewrap runner: one namespace set per command, limits from the policy, egress via the proxy."""

from __future__ import annotations

import os
import shlex
import threading
from pathlib import Path
from typing import Any

from loopmeter.hostgit import GitLayout, checkout_layout, restore_dotgit
from loopmeter.records import ExecResult
from loopmeter.sandbox.limits import DiskQuota, launcher_argv, limit_watch, make_cgroup
from loopmeter.sandbox.runner import Runner
from loopmeter.sandbox.spec import PROXY_PORT, SandboxSpec, bwrap_argv, host_home, inner_path, secret_args

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def _loopmeter_home() -> Path:
    from loopmeter.config import default_home

    return default_home()


def _empty_file(home: Path) -> Path:
    path = home / "sandbox" / "empty"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".empty.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(b"")
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)  # parallel attempts may race to create it
    return path


class BwrapRunner(Runner):
    kind = "bwrap"
    enforces = ("filesystem", "network", "env", "limits", "capabilities")

    def __init__(self, bwrap: str | None, *, store: Any = None, audit: Any = None):
        super().__init__(store=store, audit=audit)
        self.bwrap = bwrap or "bwrap"

    def build(self, argv: list[str], *, workdir: Path, policy: Any, role: str, actor: str,
              env: dict[str, str] | None = None, secrets: dict[str, str] | None = None,
              extra_allow: tuple[str, ...] | list[str] = (), home: Path | None = None,
              extra_ro: list[Path] | None = None, extra_rw: list[Path] | None = None,
              proxy_dir: Path | None = None, git: GitLayout | None = None
              ) -> tuple[SandboxSpec, dict[str, str], list[str]]:
        """The spec (deterministic; no secrets) plus the secrets to hand over and those refused."""
        lm_home = _loopmeter_home()
        inner_home = Path(home).resolve() if home is not None else host_home()
        plain, handed, refused = self.build_env(policy, role, actor, env, secrets, inner_home, inner_path())
        forwards: list[str] = []
        if proxy_dir is not None:
            proxy_url = f"http://127.0.0.1:{PROXY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
                plain[name] = proxy_url
            plain["NO_PROXY"] = plain["no_proxy"] = ""
            for target in [*policy.model.network.allow_local, *extra_allow]:
                host, _, port = target.rpartition(":")
                if host in LOCAL_HOSTS and port.isdigit() and int(port) != PROXY_PORT:
                    forwards.append(f"{host}:{port}")
        data_dirs = [Path(p) for p in policy.model.filesystem.data_dirs if not p.startswith("{")]
        ro = list(extra_ro or [])
        if "{data}" in policy.model.filesystem.data_dirs:
            data_dirs += ro  # data-restricted: the caller's read-only binds are the datasets
            ro = []
        spec = SandboxSpec(workdir=workdir, policy=policy, home=inner_home, home_bind=home is not None,
                           env=plain, proxy_dir=proxy_dir, forwards=sorted(set(forwards)),
                           extra_ro=[Path(p).resolve() for p in ro],
                           extra_rw=[Path(p).resolve() for p in (extra_rw or [])],
                           data_dirs=[p.resolve() for p in data_dirs], hide_extra=[lm_home],
                           empty_file=_empty_file(lm_home),
                           git=git if git is not None else checkout_layout(workdir))
        return spec, handed, refused

    def _run(self, argv: list[str], **kw: Any) -> ExecResult:
        ctx, policy = kw["ctx"], kw["policy"]
        limits = policy.model.limits
        network = policy.network_enabled or bool(kw["extra_allow"])
        proxy = None
        if network:
            from loopmeter.sandbox.proxy import EgressProxy

            proxy = EgressProxy(policy, kw["actor"], kw["extra_allow"],
                                on_record=lambda rec: self._proxy_record(ctx, rec))
            from loopmeter.sandbox.bridge_code import BRIDGE_CODE

            (proxy.dir / "bridge.py").write_text(BRIDGE_CODE)
        try:
            spec, handed, refused = self.build(
                argv, workdir=kw["workdir"], policy=policy, role=kw["role"], actor=kw["actor"], env=kw["env"],
                secrets=kw["secrets"], extra_allow=kw["extra_allow"], home=kw["home"], extra_ro=kw["extra_ro"],
                extra_rw=kw["extra_rw"], proxy_dir=proxy.dir if proxy else None, git=kw["git"])
            self._check_git(ctx, spec)
            self._audit(ctx, layer="policy", action="exec", target=shlex.join(argv),
                        decision="allow", rule_id=kw["exec_rule"],
                        detail={"runner": "bwrap", "role": kw["role"], "workdir": str(spec.workdir),
                                "network": network, "secrets": sorted(handed)})
            for name in refused:
                self._denial(ctx, layer="policy", action="env", target=name, rule_id="secrets.not-for-actor",
                             reason=f"secret {name} is not handed to {kw['actor']} ({kw['role']})")
            watcher = None
            if policy.model.filesystem.record_data_reads and spec.data_dirs:
                from loopmeter.sandbox.datawatch import DataWatcher

                watcher = DataWatcher(spec.data_dirs, on_open=lambda path: self._audit(
                    ctx, layer="kernel", action="read", target=path, decision="allow", rule_id="filesystem.data_dirs"))
            cgroup = make_cgroup(limits)
            disk = DiskQuota([spec.workdir, *spec.extra_rw], limits.disk_mb) if limits.disk_mb else None
            exits = None
            if limits.file_size_mb is not None:  # children killed by SIGXFSZ, seen by the kernel's exit events
                from loopmeter.sandbox.exitwatch import watch as watch_exits

                exits = watch_exits()
            secret_fd = None
            read_fd = write_fd = -1
            if handed:
                read_fd, write_fd = os.pipe()
                os.write(write_fd, secret_args(handed))
                os.close(write_fd)
                secret_fd = read_fd
            cmd = launcher_argv(limits, cgroup) + bwrap_argv(spec, argv, self.bwrap, secret_fd)
            try:
                result = self._execute(
                    cmd, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd=None, stdin=kw["stdin"],
                    timeout_s=kw["timeout_s"], cancel=kw["cancel"], on_output=kw["on_output"],
                    output_limit=limits.output_kb * 1024 if limits.output_kb else None,
                    pass_fds=(read_fd,) if handed else (),
                    kill_tree=(lambda: cgroup.kill_all(wait=False)) if cgroup is not None else None,
                    on_started=(lambda p: exits.add_pid(p.pid)) if exits is not None else None,
                    watch=limit_watch(limits, cgroup, disk))
            finally:
                if handed:
                    os.close(read_fd)
                events = cgroup.events() if cgroup is not None else {}
                if exits is not None:
                    events["xfsz"] = exits.close()
                if cgroup is not None:
                    cgroup.remove(background=True)
                if watcher is not None:
                    watcher.close()
                    if watcher.overflowed:
                        self._audit(ctx, layer="kernel", action="read", target=",".join(map(str, spec.data_dirs)),
                                    decision="allow", rule_id="filesystem.data_dirs.overflow",
                                    detail={"reason": "the inotify queue overflowed: some opens were not recorded"})
            _map_bwrap_failure(result)
            if disk is not None:
                if result.killed_reason is None and disk.measure() > disk.limit:
                    result.killed_reason = "disk"  # the step fails even though the command itself succeeded
                    result.exit_code = result.exit_code or 1
                events["disk_bytes"] = disk.used
            self._limit_denials(ctx, result, events, limits, kw["timeout_s"])
        finally:
            if proxy is not None:
                proxy.close()
            self._denial_summaries(ctx)
        result.denials = list(ctx["denials"])
        if result.denials:  # bounded: the limiter keeps ctx["denials"] short, each line is cut
            result.stderr += "".join(_denial_line(d) for d in result.denials)
        return result

    def _check_git(self, ctx: dict[str, Any], spec: SandboxSpec) -> None:
        """Before the sandbox starts: put back a worktree `.git` that earlier sandboxed code
        rewrote, and note a `.git` whose pointers loopmeter does not follow."""
        dotgit = spec.workdir / ".git"
        if spec.git is not None and restore_dotgit(spec.git):
            self._denial(ctx, layer="policy", action="git", target=str(dotgit), rule_id="git.pointer",
                         reason="the worktree's .git did not match loopmeter's records; restored")
        elif spec.git is None and os.path.lexists(dotgit):
            self._audit(ctx, layer="policy", action="git", target=str(dotgit), decision="deny",
                        rule_id="git.untrusted",
                        detail={"reason": ".git points where its repository does not point back, or is a link: "
                                          "its git dirs are not mounted"})

    # -- records ----------------------------------------------------------------
    def _denial(self, ctx: dict[str, Any], *, layer: str, action: str, target: str, rule_id: str, reason: str,
                detail: dict[str, Any] | None = None) -> None:
        """Record a denial, rate-limited per command (loopmeter.policies.denials): repeats past the first
        few are counted and written as one summary record when the command ends."""
        limiter = ctx.get("denial_limiter")
        if limiter is None:
            from loopmeter.policies.denials import DenialLimiter

            limiter = ctx["denial_limiter"] = DenialLimiter()
        if not limiter.admit(layer, action, target, rule_id, reason):
            return
        ctx["denials"].append({"layer": layer, "action": action, "target": target, "decision": "deny",
                               "rule_id": rule_id, "reason": reason})
        self._audit(ctx, layer=layer, action=action, target=target, decision="deny", rule_id=rule_id,
                    detail={"reason": reason, **(detail or {})})

    def _denial_summaries(self, ctx: dict[str, Any]) -> None:
        """At the end of a command: one record per denial whose repeats were left out, with the count."""
        limiter = ctx.get("denial_limiter")
        if limiter is None:
            return
        with _denial_lock:
            for s in limiter.summaries():
                d = s["detail"]
                ctx["denials"].append({"layer": s["layer"], "action": s["action"], "target": s["target"],
                                       "decision": "deny", "rule_id": s["rule_id"], "reason": d["reason"],
                                       "count": d["count"], "summary": d["summary"]})
                self._audit(ctx, layer=s["layer"], action=s["action"], target=s["target"], decision="deny",
                            rule_id=s["rule_id"], detail=d)

    def _proxy_record(self, ctx: dict[str, Any], rec: Any) -> None:
        detail = {"method": rec.method, "bytes_up": rec.bytes_up, "bytes_down": rec.bytes_down,
                  "reason": rec.decision.reason, "status": rec.status}
        if rec.error:
            detail["error"] = rec.error
        with _denial_lock:
            if rec.decision.allowed:
                self._audit(ctx, layer="proxy", action="connect", target=rec.target, decision="allow",
                            rule_id=rec.decision.rule_id, detail=detail)
            else:
                self._denial(ctx, layer="proxy", action="connect", target=rec.target, rule_id=rec.decision.rule_id,
                             reason=rec.decision.reason, detail=detail)
        if not rec.decision.allowed and ctx.get("on_denial") is not None:
            try:
                ctx["on_denial"]({"target": rec.target, "rule_id": rec.decision.rule_id,
                                  "reason": rec.decision.reason})
            except Exception:  # noqa: BLE001 - a caller's callback must not break the proxy's records
                pass

    def _limit_denials(self, ctx: dict[str, Any], result: ExecResult, events: dict[str, Any], limits: Any,
                       timeout_s: float | None) -> None:
        if result.timed_out:
            self._denial(ctx, layer="limit", action="wall_clock", target=f"{timeout_s}s", rule_id="limits.wall_s",
                         reason=f"killed after the {timeout_s}s wall-clock limit")
        if result.killed_reason == "output":
            self._denial(ctx, layer="limit", action="output", target=f"{limits.output_kb}KiB",
                         rule_id="limits.output_kb", reason="output limit exceeded; command killed")
        if events.get("pids"):
            self._denial(ctx, layer="limit", action="fork", target=f"pids.max={limits.pids}", rule_id="limits.pids",
                         reason=f"{events['pids']} forks refused at the process limit")
        if events.get("oom"):
            result.killed_reason = result.killed_reason or "memory"
            self._denial(ctx, layer="limit", action="memory", target=f"{limits.memory_mb}MiB",
                         rule_id="limits.memory_mb", reason="killed at the memory limit")
        if result.exit_code == 128 + 24 and result.killed_reason is None and limits.cpu_s is not None:
            result.killed_reason = "cpu"  # SIGXCPU at the soft RLIMIT_CPU
        xfsz = events.get("xfsz") or []  # names of processes anywhere in the sandbox killed by SIGXFSZ
        if result.exit_code == 128 + 25 and result.killed_reason is None and limits.file_size_mb is not None:
            result.killed_reason = "file_size"  # SIGXFSZ at RLIMIT_FSIZE
            self._denial(ctx, layer="limit", action="file_size", target=f"{limits.file_size_mb}MiB",
                         rule_id="limits.file_size_mb", reason="a write went past the file-size limit",
                         detail={"processes": xfsz})
        elif xfsz and limits.file_size_mb is not None:
            self._denial(ctx, layer="limit", action="file_size", target=f"{limits.file_size_mb}MiB",
                         rule_id="limits.file_size_mb",
                         reason=f"{len(xfsz)} process(es) killed at the file-size limit "
                                f"({', '.join(sorted(set(xfsz)))}); the command went on",
                         detail={"processes": xfsz})
        if result.killed_reason == "cpu":
            scope = "process" if result.exit_code == 128 + 24 else "sandbox"  # SIGXCPU, or the cgroup's total
            self._denial(ctx, layer="limit", action="cpu", target=f"{limits.cpu_s}s", rule_id="limits.cpu_s",
                         reason="killed at the CPU-time limit" + (
                             " (all processes together)" if scope == "sandbox" else ""),
                         detail={"scope": scope, **({"cpu_used_s": events["cpu_s"]} if "cpu_s" in events else {})})
        if result.killed_reason == "disk":
            used = events.get("disk_bytes") or 0
            self._denial(ctx, layer="limit", action="disk", target=f"{limits.disk_mb}MiB", rule_id="limits.disk_mb",
                         reason=f"the worktree takes {used / 2**20:.0f} MiB, over the {limits.disk_mb} MiB limit",
                         detail={"bytes": used})


_denial_lock = threading.Lock()


def _denial_line(d: dict[str, Any]) -> str:
    """One stderr line for a denial: the target and reason escaped (they come from the sandbox) and cut."""
    from loopmeter.safe_text import printable

    what = f"loopmeter: denied {d['action']} {printable(d['target'], 200)}: {printable(d['reason'], 300)}"
    if d.get("summary") == "repeats":
        what += f" ({d['count']} times in all)"
    elif d.get("summary") == "targets":
        what += f" ({d['count']} more denials, over the per-command record limit; see `loopmeter audit summary`)"
    return what + "\n"


def _map_bwrap_failure(result: ExecResult) -> None:
    """bubblewrap's own failures exit 1 with a `bwrap: ` line: 127 when the command is missing,
    125 when the sandbox itself could not be set up."""
    if result.exit_code != 1 or result.timed_out:
        return
    lines = result.stderr.rstrip("\n").splitlines()
    last = lines[-1] if lines else ""
    if last.startswith("bwrap: execvp "):
        result.exit_code = 127
    elif last.startswith("bwrap: "):
        result.exit_code = 125
        result.killed_reason = "start"
