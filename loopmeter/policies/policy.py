"""A loaded policy and its decisions: `policy.decide(action, target, actor)`."""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loopmeter.policies import netguard
from loopmeter.policies.execmatch import (
    Interpretation,
    TooComplex,
    exec_interpretations,
    rule_matches,
    script_interpretations,
)
from loopmeter.policies.schema import PolicyModel, Rule

_RANK = {"allow": 0, "ask": 1, "deny": 2}


@dataclass(frozen=True)
class Decision:
    decision: str  # allow, deny, ask
    rule_id: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"


def split_host_port(target: str) -> tuple[str, int | None]:
    if target.startswith("["):  # [v6]:port
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if target.count(":") == 1:
        host, port = target.split(":")
        return host, int(port) if port.isdigit() else None
    return target, None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def host_matches(host: str, pattern: str) -> bool:
    host, pattern = host.lower().rstrip("."), pattern.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _under(path: str, root: str) -> bool:
    if "*" in root or "?" in root:
        return fnmatch.fnmatchcase(path, root) or fnmatch.fnmatchcase(path, root.rstrip("/") + "/*")
    return path == root or path.startswith(root.rstrip("/") + "/")


class Policy:
    """A validated policy. `sha256` is of the file's bytes and is recorded with every run."""

    def __init__(self, model: PolicyModel, path: Path, sha256: str, text: str | None = None):
        self.model = model
        self.path = path
        self.sha256 = sha256
        self.text = text  # the YAML it was read from (what travels to another machine: PolicyText)

    @property
    def name(self) -> str:
        return self.model.name

    def __repr__(self) -> str:
        return f"Policy({self.name!r}, sha256={self.sha256[:12]})"

    @property
    def network_enabled(self) -> bool:
        return bool(self.model.network.allow or self.model.network.allow_local)

    def secrets_for(self, actor: str) -> list[str]:
        if actor == "check" or not actor.startswith("agent:"):
            return []
        return list(self.model.secrets.get(actor, []))

    def decide(self, action: str, target: str, actor: str) -> Decision:
        """The decision for one action. For `exec`, `target` is read as a shell command line and
        every program it may run is checked (see `decide_exec`); for `connect`, cloud metadata
        endpoints and local addresses are refused before any rule is looked at."""
        if action == "connect":
            guard = self._connect_guard(target)
            if guard is not None:
                return guard
        if action == "exec" and self._exec_rules(actor, restrictive_only=True):
            try:
                readings = script_interpretations(target)
            except TooComplex as exc:
                return Decision("deny", "exec.too-complex", f"{exc}: refused because exec rules cannot check it")
            return self._decide_readings(target, readings, actor)
        rule = self._first_rule(action, target, actor)
        if rule is not None:
            return Decision(rule.decision, f"rules.{rule.id}", rule.reason or f"rule {rule.id}")
        if action == "connect":
            return self._connect(target)
        if action in ("read", "write"):
            return self._path(action, target)
        if action in ("exec", "agent"):
            return Decision("allow", f"{action}.default", f"{action} allowed by default in policy {self.name}")
        return Decision("deny", "unknown-action", f"unknown action {action!r}")

    def decide_exec(self, argv: Sequence[str], actor: str, *, path: str | None = None,
                    cwd: str | os.PathLike[str] | None = None) -> Decision:
        """The decision for running `argv` with `PATH=path` in `cwd`: the most restrictive decision
        over every command line it may run (`env git push`, `sh -c "git push"`, `git -C . push`...;
        see loopmeter.policies.execmatch). Deny beats ask beats allow."""
        target = shlex.join(argv)
        if not self._exec_rules(actor, restrictive_only=True):
            rule = self._first_rule("exec", target, actor)
            if rule is not None:
                return Decision(rule.decision, f"rules.{rule.id}", rule.reason or f"rule {rule.id}")
            return Decision("allow", "exec.default", f"exec allowed by default in policy {self.name}")
        try:
            readings = exec_interpretations(list(argv), path=path, cwd=cwd)
        except TooComplex as exc:
            return Decision("deny", "exec.too-complex", f"{exc}: refused because exec rules cannot check it")
        return self._decide_readings(target, readings, actor)

    def _exec_rules(self, actor: str, restrictive_only: bool = False) -> list[Rule]:
        return [r for r in self.model.rules if r.action == "exec"
                and (r.decision != "allow" or not restrictive_only)
                and any(fnmatch.fnmatchcase(actor, a) for a in r.actors)]

    def _first_rule(self, action: str, target: str, actor: str) -> Rule | None:
        for rule in self.model.rules:
            if rule.action != action or not fnmatch.fnmatchcase(target, rule.match):
                continue
            if not any(fnmatch.fnmatchcase(actor, a) for a in rule.actors):
                continue
            return rule
        return None

    def _decide_readings(self, target: str, readings: list[Interpretation], actor: str) -> Decision:
        rules = self._exec_rules(actor)
        best: tuple[Rule, Interpretation | None] | None = None
        for reading in [None, *readings]:
            text = target if reading is None else reading.target
            tail = reading is not None and reading.open_tail
            rule = next((r for r in rules if rule_matches(text, r.match, tail)), None)
            if rule is not None and (best is None or _RANK[rule.decision] > _RANK[best[0].decision]):
                best = (rule, reading)
                if rule.decision == "deny":
                    break
        if best is None:
            return Decision("allow", "exec.default", f"exec allowed by default in policy {self.name}")
        rule, reading = best
        reason = rule.reason or f"rule {rule.id}"
        if reading is not None and reading.target != target:
            shown = reading.target if len(reading.target) <= 200 else reading.target[:200] + "..."
            reason += f" (it runs `{shown}{' ...' if reading.open_tail else ''}`)"
        return Decision(rule.decision, f"rules.{rule.id}", reason)

    def _connect_guard(self, target: str) -> Decision | None:
        """Cloud metadata endpoints: always refused. Local addresses and names: refused unless the
        exact `host:port` is listed in `network.allow_local`. Both come before the rules."""
        host, _ = split_host_port(target)
        meta = netguard.metadata_endpoint(host)
        if meta is not None:
            return Decision("deny", "network.metadata",
                            f"{host} is a cloud metadata endpoint ({meta}); no sandbox may reach it")
        if target in self.model.network.allow_local:
            return None
        local = netguard.local_reason(host)
        if local is not None:
            return Decision("deny", "network.ip-literal" if netguard.parse_ip(host) else "network.local-name",
                            f"{host} is {local}; list '{target}' in network.allow_local to allow it")
        return None

    def _connect(self, target: str) -> Decision:
        net = self.model.network
        if target in net.allow_local:
            return Decision("allow", "network.allow_local", f"{target} is listed in network.allow_local")
        host, port = split_host_port(target)
        if is_ip_literal(host) or host.lower() in ("localhost", "localhost.localdomain"):
            return Decision("deny", "network.ip-literal",
                            f"{host} is an IP literal or local name; list '{target}' in network.allow_local to allow it")
        for i, pattern in enumerate(net.allow):
            pat_host, pat_port = split_host_port(pattern)
            if not host_matches(host, pat_host):
                continue
            if pat_port is not None and pat_port != port:
                continue
            if pat_port is None and port is not None and port not in net.ports:
                return Decision("deny", "network.ports", f"port {port} is not in network.ports {net.ports}")
            return Decision("allow", f"network.allow[{i}]", f"{host} matches '{pattern}'")
        return Decision("deny", "network.default-deny", f"{host} is not in the allowlist of policy {self.name}")

    def _path(self, action: str, target: str) -> Decision:
        fs = self.model.filesystem
        home = str(Path.home())
        path = target.replace("~", home, 1) if target.startswith("~") else target
        for hidden in fs.hidden:
            if _under(path, hidden.replace("~", home, 1)):
                return Decision("deny", "filesystem.hidden", f"{target} is hidden by policy {self.name}")
        if action == "write":
            for w in fs.writable:
                if _under(path, w.replace("~", home, 1)):
                    return Decision("allow", "filesystem.writable", f"{target} is writable")
            return Decision("deny", "filesystem.read-only",
                            f"{target} is outside the worktree and private tmp (the only writable places)")
        for r in [*fs.readable, *fs.data_dirs]:
            if _under(path, r.replace("~", home, 1)):
                return Decision("allow", "filesystem.readable", f"{target} is readable")
        return Decision("deny", "filesystem.not-readable", f"{target} is not mounted in the sandbox")
