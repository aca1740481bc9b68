"""Runners: `make_runner("bwrap")` (fails closed) or `make_runner("none")` (only when asked, audited).

`runner.run(argv, workdir=..., policy=..., role=..., actor=...)` -> ExecResult. The command's
exit code is returned; 124 when the wall clock ran out (the whole tree is killed), 125 when the
sandbox could not start, 126 when the policy refused the command.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from loopmeter.hostgit import GitLayout
from loopmeter.policies.policy import Policy
from loopmeter.records import ExecResult
from loopmeter.safe_text import printable
from loopmeter.sandbox.errors import SandboxUnavailable
from loopmeter.sandbox.probe import INSTALL_HINT, probe_bwrap

EXIT_TIMEOUT, EXIT_NO_SANDBOX, EXIT_DENIED = 124, 125, 126
_probe_lock = threading.Lock()
_probe_cache: dict[str, Any] = {}


class Runner:
    """What every runner shares: env building, the policy check, output capture, kill on timeout."""

    kind = "none"
    enforces: tuple[str, ...] = ()

    def __init__(self, *, store: Any = None, audit: Any = None):
        self.store = store
        if audit is None and store is not None:
            from loopmeter.policies.audit import AuditLog

            audit = AuditLog.default(store)
        self.audit = audit

    # -- audit --------------------------------------------------------------
    def _audit(self, ctx: dict[str, Any], **fields: Any) -> None:
        if self.audit is None:
            return
        self.audit.append(sandbox_id=ctx["sandbox_id"], run_id=ctx["run_id"], attempt_id=ctx["attempt_id"],
                          actor=ctx["actor"], policy_sha256=ctx["policy"].sha256, **fields)

    # -- environment -------------------------------------------------------
    @staticmethod
    def build_env(policy: Policy, role: str, actor: str, env: Mapping[str, str] | None,
                  secrets: Mapping[str, str] | None, home: Path, path: str) -> tuple[dict[str, str],
                                                                                   dict[str, str], list[str]]:
        """(plain env, secrets handed over, names of secrets refused)."""
        model = policy.model.env
        out = {k: os.environ[k] for k in model.allow if k in os.environ}
        out.update(model.set)
        out.update(env or {})
        if "PATH" not in (env or {}) and "PATH" not in model.set:
            out["PATH"] = path  # the host's PATH names directories that do not exist inside
        out.update({"HOME": str(home), "TMPDIR": "/tmp", "LOOPMETER_SANDBOX": "1"})
        allowed = set(policy.secrets_for(actor)) if role == "agent" else set()
        handed = {k: v for k, v in (secrets or {}).items() if k in allowed}
        refused = set(k for k in (secrets or {}) if k not in allowed)
        # the check never gets a key, not even one passed in plain `env` by mistake (an agent's plain env
        # may carry a placeholder key for a local model server, so it is left as the caller gave it)
        for name in _secret_names(policy) if role == "check" else ():
            if name in out:
                out.pop(name)
                refused.add(name)
        # vendor admin keys (loopmeter vendors sync) never enter a sandbox, whatever a policy says
        from loopmeter.secrets import NEVER_IN_SANDBOX

        for name in NEVER_IN_SANDBOX:
            for found in (out, handed):
                if name in found:
                    found.pop(name)
                    refused.add(name)
        return out, handed, sorted(refused)

    def run(self, argv: list[str], *, workdir: Path, policy: Policy, role: str, actor: str,
            env: dict[str, str] | None = None, secrets: dict[str, str] | None = None,
            timeout_s: float | None = None, run_id: str | None = None, attempt_id: str | None = None,
            extra_allow: Sequence[str] = (), home: Path | None = None,
            extra_ro_binds: Sequence[Path] = (), extra_rw_binds: Sequence[Path] = (),
            stdin: str | None = None, cancel: threading.Event | None = None,
            on_output: Callable[[str, str], None] | None = None, git: GitLayout | None = None,
            approved: bool = False, on_denial: Callable[[dict[str, str]], None] | None = None) -> ExecResult:
        """`git`: the workdir's git layout from loopmeter's records (hostgit); without it a
        workdir's own git pointers are used only when they all agree (`checkout_layout`).
        `approved`: a person approved exactly this command, so an `ask` rule lets it run (a
        `deny` still refuses it). `on_denial` hears of each connection the egress proxy refuses
        while the command runs ({target, rule_id, reason}), e.g. to stop an agent whose model
        endpoint cannot be reached instead of letting it retry for minutes."""
        if role not in ("agent", "check"):
            from loopmeter.errors import LoopmeterError

            raise LoopmeterError(f"unknown sandbox role {role!r}", hint="use 'agent' or 'check'")
        if not isinstance(policy, Policy):
            from loopmeter.policies import load_policy

            policy = load_policy(policy)  # a preset name or a path is accepted too
        workdir = Path(workdir).resolve()
        ctx: dict[str, Any] = {"sandbox_id": uuid.uuid4().hex[:16], "run_id": run_id, "attempt_id": attempt_id,
                               "actor": actor, "policy": policy, "denials": [],
                               "on_denial": on_denial}
        target = shlex.join(argv)
        missing = [g for g in policy.model.requires if g not in self.enforces]
        if missing:
            reason = f"policy {policy.name} requires {', '.join(missing)}, which the {self.kind} runner does not enforce"
            self._audit(ctx, layer="policy", action="exec", target=target, decision="deny", rule_id="requires",
                        detail={"reason": reason, "runner": self.kind})
            return ExecResult(EXIT_NO_SANDBOX, "", f"loopmeter: {reason}\n", killed_reason="start",
                              denials=[{"layer": "policy", "action": "exec", "target": target, "decision": "deny",
                                        "rule_id": "requires", "reason": reason}])
        from loopmeter.sandbox.spec import inner_path  # the PATH the command will see, as build_env sets it

        decision = policy.decide_exec(argv, actor, cwd=workdir, path=(env or {}).get("PATH")
                                      or policy.model.env.set.get("PATH") or inner_path())
        if decision.decision == "ask" and approved:
            self._audit(ctx, layer="policy", action="exec", target=target, decision="allow",
                        rule_id=decision.rule_id, detail={"reason": "a person approved this command",
                                                          "runner": self.kind})
        elif not decision.allowed:
            self._audit(ctx, layer="policy", action="exec", target=target, decision=decision.decision,
                        rule_id=decision.rule_id, detail={"reason": decision.reason, "runner": self.kind})
            msg = f"loopmeter: policy {policy.name} {'needs approval for' if decision.decision == 'ask' else 'denies'}"
            return ExecResult(EXIT_DENIED, "", f"{msg} {printable(target, 300)}: {printable(decision.reason, 300)}\n",
                              denials=[{"layer": "policy", "action": "exec", "target": target,
                                        "decision": decision.decision, "rule_id": decision.rule_id,
                                        "reason": decision.reason}])
        limit_s = timeout_s if timeout_s is not None else policy.model.limits.wall_s
        return self._run(argv, ctx=ctx, workdir=workdir, policy=policy, role=role, actor=actor, env=env,
                         secrets=secrets, timeout_s=limit_s, extra_allow=extra_allow, home=home,
                         extra_ro=list(extra_ro_binds), extra_rw=list(extra_rw_binds), stdin=stdin,
                         cancel=cancel, on_output=on_output, exec_rule=decision.rule_id, git=git)

    def _run(self, argv: list[str], **kw: Any) -> ExecResult:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- process handling -----------------------------------------------------
    def _execute(self, cmd: list[str], *, env: dict[str, str] | None, cwd: Path | None, stdin: str | None,
                 timeout_s: float | None, cancel: threading.Event | None,
                 on_output: Callable[[str, str], None] | None, output_limit: int | None,
                 pass_fds: Sequence[int] = (), on_started: Callable[[subprocess.Popen], None] | None = None,
                 kill_tree: Callable[[], None] | None = None,
                 watch: Callable[[], str | None] | None = None) -> ExecResult:
        """`watch`, when given, is called every 0.1 s while the command runs; a reason it returns
        (e.g. "cpu" for the cgroup's CPU total) kills the command and becomes `killed_reason`.
        `kill_tree` kills everything the command started: called when the command is killed (before
        its process group, so a reaper in that group can finish first) and again once it ended."""
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.PIPE if stdin is not None
                                    else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, pass_fds=tuple(pass_fds))
        except OSError as exc:
            return ExecResult(EXIT_NO_SANDBOX, "", f"loopmeter: cannot start {cmd[0]}: {exc}\n",
                              wall_s=time.monotonic() - start, killed_reason="start")
        if on_started is not None:
            on_started(proc)
        state = {"bytes": 0, "over": False}
        chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}
        over_event = threading.Event()
        # woken the moment the process ends or output overflows (Popen.wait(timeout) polls with sleeps)
        wake = threading.Event()

        def reader(stream: IO[bytes], name: str) -> None:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                state["bytes"] += len(raw)
                if output_limit is not None and state["bytes"] > output_limit:
                    state["over"] = True
                    over_event.set()
                    wake.set()
                    continue
                chunks[name].append(line)
                if on_output is not None:
                    try:
                        on_output(name, line.rstrip("\n"))
                    except Exception:  # noqa: BLE001 - a display callback must not break capture
                        pass
            stream.close()

        threads = [threading.Thread(target=reader, args=(proc.stdout, "stdout"), daemon=True),
                   threading.Thread(target=reader, args=(proc.stderr, "stderr"), daemon=True)]
        for t in threads:
            t.start()
        if stdin is not None and proc.stdin is not None:
            def feed() -> None:
                try:
                    proc.stdin.write(stdin.encode())  # type: ignore[union-attr]
                    proc.stdin.close()  # type: ignore[union-attr]
                except OSError:
                    pass
            threading.Thread(target=feed, daemon=True).start()
        reason: str | None = None
        deadline = start + timeout_s if timeout_s else None
        def waiter() -> None:
            proc.wait()
            wake.set()

        threading.Thread(target=waiter, daemon=True).start()
        while True:
            step = 0.1 if cancel is not None or watch is not None else None
            if deadline is not None:
                left = max(deadline - time.monotonic(), 0)
                step = left if step is None else min(step, left)
            wake.wait(step)
            wake.clear()
            if proc.poll() is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                reason = "timeout"
            elif cancel is not None and cancel.is_set():
                reason = "cancelled"
            elif over_event.is_set():
                reason = "output"
            elif watch is not None:
                reason = watch()
            if reason:
                if kill_tree is not None:
                    kill_tree()
                _kill_group(proc)
                proc.wait()
                break
        if kill_tree is not None:
            kill_tree()  # nothing outlives the command
        for t in threads:
            t.join(timeout=5)
        code = proc.returncode
        if code is not None and code < 0:
            code = 128 - code
        if reason == "timeout":
            code = EXIT_TIMEOUT
        if state["over"] and reason is None:
            reason = "output"
        return ExecResult(code if code is not None else 1, "".join(chunks["stdout"]), "".join(chunks["stderr"]),
                          wall_s=time.monotonic() - start, timed_out=reason == "timeout", killed_reason=reason)


def _secret_names(policy: Policy) -> set[str]:
    from loopmeter.secrets import PROVIDERS

    names = set(PROVIDERS.values())
    for listed in policy.model.secrets.values():
        names.update(listed)
    return names


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def make_runner(kind: str = "bwrap", *, store: Any = None, audit: Any = None) -> Runner:
    """A sandbox runner. "bwrap" refuses to exist where bubblewrap cannot isolate (fails closed)."""
    if kind == "bwrap":
        with _probe_lock:
            status = _probe_cache.get("bwrap")
            if status is None or not status.usable:
                status = probe_bwrap()
                _probe_cache["bwrap"] = status
        if not status.usable:
            raise SandboxUnavailable(f"the bubblewrap sandbox cannot start: {status.error}",
                                     hint=status.hint or INSTALL_HINT)
        from loopmeter.sandbox.bwrap import BwrapRunner

        return BwrapRunner(status.path, store=store, audit=audit)
    if kind == "none":
        from loopmeter.sandbox.unsandboxed import UnsandboxedRunner

        return UnsandboxedRunner(store=store, audit=audit)
    from loopmeter.errors import LoopmeterError

    raise LoopmeterError(f"unknown sandbox runner {kind!r}", hint="use --sandbox bwrap (or 'none' to run unsandboxed)")
