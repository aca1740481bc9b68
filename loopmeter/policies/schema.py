"""The policy file format (YAML), validated with pydantic. Unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DecisionKind = Literal["allow", "deny", "ask"]
Action = Literal["exec", "connect", "read", "write", "agent"]

DEFAULT_READABLE = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "{python}"]
DEFAULT_HIDDEN = [
    "~/.ssh", "~/.aws", "~/.config/gcloud", "~/.azure", "~/.kube", "~/.docker", "~/.netrc", "~/.gnupg",
    "~/.local/share/keyrings", "~/.password-store", "~/.env", "~/.git-credentials", "~/.npmrc", "~/.pypirc",
    "/var/run/docker.sock", "/run/docker.sock", "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d",
    "/etc/ssl/private", "/etc/ssh/ssh_host_*_key",
]
DEFAULT_ENV = ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "COLUMNS", "LINES", "NO_COLOR"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filesystem(Strict):
    """Where the sandboxed process may read and write. `{worktree}` and a private tmp are always writable."""

    readable: list[str] = Field(default_factory=lambda: list(DEFAULT_READABLE))
    writable: list[str] = Field(default_factory=list)  # beyond the worktree and tmp
    hidden: list[str] = Field(default_factory=lambda: list(DEFAULT_HIDDEN))
    git_readonly: list[str] = Field(default_factory=lambda: ["hooks", "config"])
    data_dirs: list[str] = Field(default_factory=list)  # read-only; every open is audited
    record_data_reads: bool = False

    @field_validator("readable", "writable", "hidden", "data_dirs")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for p in paths:
            if not (p.startswith("/") or p.startswith("~") or p.startswith("{")):
                raise ValueError(f"path {p!r} must be absolute, start with ~ or be a {{placeholder}}")
        return paths


class Network(Strict):
    """Denied by default. Allowed hosts are reached only through the egress proxy."""

    allow: list[str] = Field(default_factory=list)  # "host", "*.suffix", optionally ":port"
    allow_local: list[str] = Field(default_factory=list)  # exact "127.0.0.1:11434" style entries
    ports: list[int] = Field(default_factory=lambda: [80, 443])

    @field_validator("allow")
    @classmethod
    def _hosts(cls, items: list[str]) -> list[str]:
        for item in items:
            host = item.rsplit(":", 1)[0] if item.count(":") == 1 else item
            bare = host.removeprefix("*.")
            if not bare or "*" in bare or "/" in host or " " in host:
                raise ValueError(f"bad host pattern {item!r}: use 'example.com' or '*.example.com'")
        return items

    @field_validator("allow_local")
    @classmethod
    def _local(cls, items: list[str]) -> list[str]:
        for item in items:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"bad local endpoint {item!r}: use 'host:port', e.g. '127.0.0.1:11434'")
        return items

    @field_validator("ports")
    @classmethod
    def _port_range(cls, ports: list[int]) -> list[int]:
        for p in ports:
            if not 0 < p < 65536:
                raise ValueError(f"port {p} is out of range 1-65535")
        return ports


class Env(Strict):
    """A clean environment: only these names pass from the caller, plus `set`."""

    allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV))
    set: dict[str, str] = Field(default_factory=dict)


class Limits(Strict):
    wall_s: float | None = Field(default=1800, gt=0)
    cpu_s: int | None = Field(default=1800, gt=0)
    memory_mb: int | None = Field(default=4096, gt=0)
    pids: int | None = Field(default=512, gt=0)
    file_size_mb: int | None = Field(default=1024, gt=0)
    output_kb: int | None = Field(default=10240, gt=0)
    # the worktree's size (and other writable binds'), checked after each command; opt-in (a walk of the tree)
    disk_mb: int | None = Field(default=None, gt=0)


class Rule(Strict):
    """An explicit decision; the first rule that matches wins. `ask` pauses the run for a person."""

    id: str = Field(min_length=1)
    action: Action
    match: str = "*"  # fnmatch pattern on the target
    actors: list[str] = Field(default_factory=lambda: ["*"])
    decision: DecisionKind
    reason: str = ""


Guarantee = Literal["filesystem", "network", "env", "limits", "capabilities"]


class PolicyModel(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    # guarantees a runner must enforce for this policy; a runner that lacks one refuses to run
    requires: list[Guarantee] = Field(default_factory=list)
    filesystem: Filesystem = Field(default_factory=Filesystem)
    network: Network = Field(default_factory=Network)
    env: Env = Field(default_factory=Env)
    secrets: dict[str, list[str]] = Field(default_factory=dict)  # actor -> env var names
    limits: Limits = Field(default_factory=Limits)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, secrets: dict[str, list[str]]) -> dict[str, list[str]]:
        for actor, names in secrets.items():
            if actor == "check" or not actor.startswith("agent:"):
                raise ValueError(f"secrets go only to agents ('agent:<name>'), not to {actor!r}")
            for n in names:
                if not n.replace("_", "").isalnum():
                    raise ValueError(f"bad environment variable name {n!r}")
        return secrets
