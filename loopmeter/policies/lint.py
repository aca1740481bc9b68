"""`loopmeter policy lint`: a policy that loads can still be too wide. Each finding names its line.

Errors (the file does not load: YAML, schema, size, alias bombs) and warnings (it loads, but a
reviewer should look):

| code | warns when |
|---|---|
| `fs-root` | `/` (or `/*`) is readable, writable or a data dir: the whole host filesystem |
| `fs-home` | a home directory, `~`, `/home` or `/root` is readable or writable |
| `fs-system` | a system directory (`/usr`, `/etc`, `/var`, `/proc`, `/dev`, ...) is writable, or `/proc`, `/sys`, `/dev`, `/run`, `/var` readable |
| `hidden-empty` | `filesystem.hidden` is empty: nothing is hidden |
| `hidden-missing` | `filesystem.hidden` leaves out `~/.ssh`, `~/.aws`, `/etc/shadow`, ... |
| `net-tld-wildcard` | `network.allow` has `*.com`, `*.co.uk`, `*.github.io`: everybody's hosts |
| `net-metadata` | an allow list or a connect rule names a cloud metadata endpoint (refused anyway) |
| `net-link-local` | an allow list names a link-local address (169.254.0.0/16, fe80::/10) |
| `net-private` | an allow list names a private, shared or local address or name (loopback in `allow_local` is the documented way to reach a local model server and is not flagged) |
| `net-allow-all` | a connect rule allows every host |
| `limits-off` | a limit (wall, cpu, memory, pids, file size, output) is `null`: no limit |
| `env-secret` | `env.allow` passes a secret-looking variable to every command, the check included |
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loopmeter.errors import ConfigError
from loopmeter.policies import netguard
from loopmeter.policies.loader import (
    PolicyError,
    compose_yaml,
    line_of,
    parse_policy,
    read_policy_text,
    resolve_policy_path,
    safe_text,
)
from loopmeter.policies.policy import Policy, split_host_port

CORE_HIDDEN = ("~/.ssh", "~/.aws", "~/.config/gcloud", "~/.azure", "~/.kube", "~/.docker", "~/.netrc", "~/.gnupg",
               "~/.git-credentials", "/etc/shadow")
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/var", "/opt",
               "/proc", "/sys", "/dev", "/run", "/srv", "/snap")
SENSITIVE_READABLE = ("/proc", "/sys", "/dev", "/run", "/var")
LIMITS = {"wall_s": "wall-clock", "cpu_s": "CPU time", "memory_mb": "memory", "pids": "process count",
          "file_size_mb": "file size", "output_kb": "captured output"}
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|COOKIE|SESSION|AUTH|PRIVATE)"
                          r"|^(AWS|AZURE|GCP|GOOGLE_APPLICATION|KUBECONFIG|DOCKER_HOST|SSH_AUTH_SOCK|VAULT|NETRC)",
                          re.IGNORECASE)


@dataclass
class Finding:
    severity: str  # error, warning
    code: str
    file: str
    line: int | None
    field: str
    message: str
    hint: str | None = None

    def text(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.severity}: {self.field + ': ' if self.field else ''}{self.message} [{self.code}]"


@dataclass
class LintResult:
    file: str
    name: str | None = None
    sha256: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "name": self.name, "sha256": self.sha256, "ok": not self.errors,
                "errors": [_brief(f) for f in self.errors], "warnings": [_brief(f) for f in self.warnings]}


def _brief(f: Finding) -> dict[str, Any]:
    out = asdict(f)
    out.pop("severity")
    out.pop("file")
    return out


def lint_policy_file(ref: str | Path) -> LintResult:
    """Load a policy (errors) and look for what is too wide in it (warnings)."""
    try:
        path = resolve_policy_path(ref)
    except ConfigError as exc:
        return LintResult(str(ref), findings=[Finding("error", "load", str(ref), None, "", exc.message, exc.hint)])
    result = LintResult(str(path))
    try:
        text, sha256 = read_policy_text(path)
        policy = parse_policy(text, path, sha256=sha256)
        _, node = compose_yaml(text, path)
    except PolicyError as exc:
        result.findings.append(Finding("error", "load", exc.path, exc.line, exc.field, exc.detail, exc.hint))
        return result
    result.name, result.sha256 = safe_text(policy.name), policy.sha256
    result.findings.extend(lint_policy(policy, node))
    return result


def lint_policy(policy: Policy, node: Any = None) -> list[Finding]:
    """Warnings for a loaded policy; `node` (the YAML root) gives each its line."""
    out: list[Finding] = []
    file = str(policy.path)
    model = policy.model

    def warn(code: str, loc: tuple[Any, ...], message: str, hint: str | None = None) -> None:
        line = line_of(node, loc) if node is not None else None
        out.append(Finding("warning", code, file, line, ".".join(str(p) for p in loc), safe_text(message), hint))

    fs = model.filesystem
    home = os.path.expanduser("~")
    for key, entries in (("readable", fs.readable), ("writable", fs.writable), ("data_dirs", fs.data_dirs)):
        verb = "writable" if key == "writable" else "readable"
        for i, entry in enumerate(entries):
            norm = _norm_path(entry, home)
            if norm == "/" or entry.strip() in ("/*", "/**"):
                warn("fs-root", ("filesystem", key, i), f"{entry!r} makes the whole host filesystem {verb}",
                     "list the directories the tools need instead")
            elif norm in ("~", home, posixpath.dirname(home), "/home", "/root", "/Users") \
                    or entry.strip() in ("~/*", "/home/*"):
                warn("fs-home", ("filesystem", key, i),
                     f"{entry!r} makes a home directory {verb} (keys, tokens, shell history, other projects)",
                     "list the exact folders needed; secrets in the home directory are what the sandbox protects")
            elif key == "writable" and any(norm == d or norm.startswith(d + "/") for d in SYSTEM_DIRS):
                warn("fs-system", ("filesystem", key, i),
                     f"{entry!r} makes a system directory writable: what runs later on the host reads it",
                     "write only inside the worktree or a folder of its own")
            elif key != "writable" and any(norm == d or norm.startswith(d + "/") for d in SENSITIVE_READABLE):
                warn("fs-system", ("filesystem", key, i),
                     f"{entry!r} exposes host {norm.split('/')[1]} state (processes, devices, sockets, logs)",
                     "the sandbox has its own /proc and /dev; leave these out")
    if not fs.hidden:
        warn("hidden-empty", ("filesystem", "hidden"),
             "the hidden list is empty: ~/.ssh, cloud credentials and /etc/shadow are visible wherever readable",
             "leave 'hidden' out to get the default list, or extend it")
    else:
        listed = {h.rstrip("/") for h in fs.hidden}
        missing = [h for h in CORE_HIDDEN if h not in listed]
        if missing:
            warn("hidden-missing", ("filesystem", "hidden"), "the hidden list leaves out " + ", ".join(missing),
                 "start from the default list (leave 'hidden' out) and add to it")

    net = model.network
    for i, item in enumerate(net.allow):
        host, _ = split_host_port(item)
        loc: tuple[Any, ...] = ("network", "allow", i)
        if host.startswith("*."):
            suffix = host[2:]
            if netguard.public_suffix(suffix) and netguard.local_reason("lint-probe." + suffix) is None:
                warn("net-tld-wildcard", loc,
                     f"{item!r} matches every host under the public suffix {suffix!r}: anybody can register one",
                     "list the exact hosts (or *.one-domain-you-trust.com)")
            sample = "lint-probe." + suffix
        else:
            sample = host
        _net_item(warn, loc, item, sample, loopback_ok=False)
    for i, item in enumerate(net.allow_local):
        host, _ = split_host_port(item)
        _net_item(warn, ("network", "allow_local", i), item, host, loopback_ok=True)
    for i, rule in enumerate(model.rules):
        if rule.action != "connect" or rule.decision != "allow":
            continue
        loc = ("rules", i, "match")
        if all(fnmatch.fnmatchcase(t, rule.match) for t in ("lint-probe.example:443", "203.0.113.7:8080")):
            warn("net-allow-all", loc, f"rule {rule.id!r} allows a connection to every host",
                 "allow the hosts by name in network.allow")
        probes = ["169.254.169.254:80", "metadata.google.internal:80", "[fd00:ec2::254]:80", "100.100.100.200:80"]
        if any(fnmatch.fnmatchcase(t, rule.match) for t in probes):
            warn("net-metadata", loc, f"rule {rule.id!r} would allow a cloud metadata endpoint; "
                 "loopmeter refuses those anyway", "narrow the pattern")

    limits = model.limits
    for key, what in LIMITS.items():
        if getattr(limits, key, None) is None:
            warn("limits-off", ("limits", key), f"null turns the {what} limit off",
                 "set a number; leave the key out to get the default")

    for i, name in enumerate(model.env.allow):
        if _SECRET_NAME.search(name):
            warn("env-secret", ("env", "allow", i),
                 f"{name} looks like a secret and passes from your environment to every command, the check included",
                 "hand keys to one agent with 'secrets: {agent:NAME: [VAR]}'")
    return sorted(out, key=lambda f: f.line or 0)


def _net_item(warn: Any, loc: tuple[Any, ...], item: str, host: str, *, loopback_ok: bool) -> None:
    meta = netguard.metadata_endpoint(host)
    if meta is not None:
        warn("net-metadata", loc, f"{item!r} is a cloud metadata endpoint ({meta}); loopmeter refuses it anyway",
             "remove it: it hands out the machine's cloud credentials")
        return
    ip = netguard.parse_ip(host)
    reason = netguard.local_reason(host)
    if reason is None:
        return
    if reason == "a link-local address":
        warn("net-link-local", loc, f"{item!r} is {reason} (where cloud metadata and host agents live)",
             "remove it")
    elif not (loopback_ok and ip is not None and ip.is_loopback) and not (loopback_ok and host == "localhost"):
        warn("net-private", loc, f"{item!r} is {reason}: the sandbox reaches your local network through it",
             "allow only the exact host:port of the service you need, in allow_local")


def _norm_path(entry: str, home: str) -> str:
    p = entry.strip()
    if p == "~" or p.startswith("~/"):
        p = home + p[1:]
    p = "/" + p.lstrip("/") if p.startswith("/") else p
    return posixpath.normpath(p) if p.startswith("/") else p
