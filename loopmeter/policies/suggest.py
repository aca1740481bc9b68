"""`loopmeter policy suggest RUN`: the smallest policy change that would have allowed what a run was denied.

It reads the run's denials through `loopmeter.policies.denials.group_denials` (the same grouping as
`loopmeter audit summary`) and, for each, proposes the narrowest entry that allows it: an exact host
in `network.allow` (never a wildcard), an exact `host:port` in `network.allow_local`, one secret name
for one agent, an allow rule for one exact command and actor placed before the rule that denied it,
or a limit raised. Every change widens what a sandbox may do, and each says how in `warnings`
(a private or loopback address, a cloud metadata endpoint, a secret handed over, a rule overridden,
a wildcard that would cover more). Denials no policy change can allow (a name that does not resolve,
the proxy's own limits, a runner that lacks a guarantee) are listed as notes.

Nothing is written: the result is a YAML fragment, the whole suggested policy (normalised: the
file's comments are not kept) and a unified diff against the policy in force.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import yaml

from loopmeter.policies.denials import OTHER_TARGETS, DenialGroup
from loopmeter.policies.policy import Policy, is_ip_literal, split_host_port
from loopmeter.policies.schema import PolicyModel
from loopmeter.safe_text import has_unsafe, printable

METADATA_HOSTS = {"169.254.169.254", "fd00:ec2::254", "metadata.google.internal", "metadata",
                  "instance-data", "instance-data.ec2.internal", "100.100.100.200"}
PRIVATE_SUFFIXES = (".internal", ".local", ".lan", ".home.arpa", ".localdomain", ".corp", ".intranet")
LIMIT_FIELDS = {"limits.wall_s": "wall_s", "limits.cpu_s": "cpu_s", "limits.memory_mb": "memory_mb",
                "limits.pids": "pids", "limits.output_kb": "output_kb", "limits.file_size_mb": "file_size_mb",
                "limits.disk_mb": "disk_mb"}
NOT_POLICY = {
    "network.metadata": "cloud metadata endpoints are refused before any rule: no policy allows them",
    "exec.too-complex": "the command line is too complex for exec rules to check; it is refused whatever the policy",
    "network.dns": "the name did not resolve; no policy change makes it resolve",
    "network.dns-timeout": "the resolver gave no answer; no policy change helps",
    "network.unreachable": "the host was allowed but could not be reached",
    "network.no-port": "the request named no port",
    "proxy.bad-target": "the proxy refuses malformed targets (control bytes, bad IDNA, too long) whatever the policy",
    "proxy.bad-request": "the proxy refuses malformed requests whatever the policy",
    "proxy.max-connections": "the proxy's cap on concurrent connections per sandbox is not a policy setting",
    "proxy.error": "the proxy failed on the request; not a policy decision",
    "requires": "the runner used does not enforce what the policy requires; run with --sandbox bwrap",
    "git.pointer": "a rewritten .git is always restored",
    "git.untrusted": "a .git loopmeter does not recognise is never mounted",
}


@dataclass
class Change:
    field: str  # e.g. "network.allow", "network.allow_local", "secrets.agent:codex", "rules", "limits.memory_mb"
    value: Any  # the entry added, the rule inserted, or the limit's new value
    was: Any = None  # a limit's old value
    denials: int = 0  # how many denials this change would have allowed
    targets: list[str] = dc_field(default_factory=list)
    warnings: list[str] = dc_field(default_factory=list)


@dataclass
class Note:
    target: str
    rule_id: str | None
    count: int
    why: str


@dataclass
class Suggestion:
    policy_name: str
    policy_path: str
    policy_sha256: str
    run_policy_sha256: list[str]
    changes: list[Change]
    notes: list[Note]
    fragment: str
    suggested: str  # the whole suggested policy, normalised YAML
    diff: str
    unresolved: list[str]  # denials the suggested policy still would not allow (a bug if ever non-empty)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ip_warnings(host: str) -> list[str]:
    out: list[str] = []
    if host.lower() in METADATA_HOSTS:
        out.append(f"{host} is a cloud metadata endpoint: it hands out the machine's cloud credentials. "
                   "Do not allow it")
    if host.lower() in ("localhost", "localhost.localdomain"):
        out.append("localhost is the host's loopback: the sandbox would reach the host's own services "
                   "(databases, model servers, admin APIs)")
        return out
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return out
    if ip.is_loopback:
        out.append(f"{host} is the host's loopback: the sandbox would reach the host's own services "
                   "(databases, model servers, admin APIs)")
    elif ip.is_link_local:
        if not out:
            out.append(f"{host} is link-local (where cloud metadata endpoints live): it can hand out credentials")
    elif ip.is_private:
        out.append(f"{host} is a private address: the sandbox would reach your private network")
    elif ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        out.append(f"{host} is a multicast, reserved or unspecified address")
    else:
        out.append(f"{host} is an IP literal: allowed whatever name it stands for, and no name is reviewed")
    return out


def _name_warnings(host: str) -> list[str]:
    h = host.lower()
    if h in METADATA_HOSTS:
        return [f"{host} is a cloud metadata endpoint: it hands out the machine's cloud credentials. Do not allow it"]
    if h.endswith(PRIVATE_SUFFIXES) or "." not in h:
        return [f"{host} looks like a private-network name: the sandbox would reach an internal service"]
    return []


def _rule_id(action: str, target: str, existing: set[str]) -> str:
    base = "allow-" + "".join(c if c.isalnum() else "-" for c in f"{action}-{target}".lower())[:40].strip("-")
    rid, n = base, 2
    while rid in existing:
        rid, n = f"{base}-{n}", n + 1
    existing.add(rid)
    return rid


def _fnmatch_literal(text: str) -> str:
    """A pattern `fnmatch` matches against exactly `text`."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


class _Plan:
    def __init__(self, policy: Policy, run: str):
        self.policy = policy
        self.run = run
        self.data = policy.model.model_dump()
        self.changes: dict[tuple[str, str], Change] = {}
        self.notes: list[Note] = []
        self.rule_ids = {r["id"] for r in self.data["rules"]}
        self.front_rules: list[dict[str, Any]] = []
        self.checks: list[tuple[str, str, str]] = []  # (action, target, actor) the result must allow

    def change(self, fieldname: str, value: Any, g: DenialGroup, warnings: list[str], was: Any = None) -> None:
        key = (fieldname, repr(value) if not isinstance(value, dict) else value["id"])
        ch = self.changes.get(key)
        if ch is None:
            ch = self.changes[key] = Change(fieldname, value, was, warnings=list(warnings))
        ch.denials += g.count
        if g.target not in ch.targets:
            ch.targets.append(g.target)

    def note(self, g: DenialGroup, why: str) -> None:
        self.notes.append(Note(g.target, g.rule_id, g.count, why))

    def add(self, g: DenialGroup) -> None:
        rule = g.rule_id or ""
        if rule in NOT_POLICY:
            self.note(g, NOT_POLICY[rule])
        elif g.target == OTHER_TARGETS or g.target.startswith("("):
            self.note(g, "these denials were counted without their targets (over the per-command record limit); "
                         "`loopmeter audit summary` lists the ones that were kept")
        elif has_unsafe(g.target):
            self.note(g, "the target holds control characters; never allowed by a suggestion")
        elif rule.startswith("rules."):
            self._override(g, rule)
        elif g.layer == "proxy" and g.action == "connect":
            self._connect(g, rule)
        elif g.action == "env" and rule == "secrets.not-for-actor":
            self._secret(g)
        elif rule in LIMIT_FIELDS:
            self._limit(g, rule)
        else:
            self.note(g, f"no policy change is known for {g.layer} {g.action} denials (rule {rule or '-'})")

    def _connect(self, g: DenialGroup, rule: str) -> None:
        host, port = split_host_port(g.target)
        if port is None:
            self.note(g, "the target names no port")
            return
        if rule == "network.default-deny":
            entry = host if port in self.data["network"]["ports"] else f"{host}:{port}"
            warnings = [f"{host} would receive whatever the sandboxed code sends it", *_name_warnings(host)]
            self.change("network.allow", entry, g, warnings)
        elif rule == "network.ports":
            self.change("network.allow", f"{host}:{port}", g,
                        [f"port {port} is not in network.ports: allowed for {host} only, not for every host",
                         *_name_warnings(host)])
        elif rule in ("network.ip-literal", "network.local-name"):
            self.change("network.allow_local", g.target, g, _ip_warnings(host) or _name_warnings(host) or
                        [f"{g.target} is reached by address, not by a reviewed name"])
        elif rule == "network.private-address":
            self.change("network.allow_local", g.target, g,
                        [f"{host} resolves to a private or loopback address: allowing it lets the sandbox reach "
                         "that network, and whatever the name's DNS points at next (rebinding)", *_ip_warnings(host)])
        else:
            self.note(g, f"no policy change is known for connect rule {rule}")
            return
        self.checks.append(("connect", g.target, g.actor or "*"))

    def _secret(self, g: DenialGroup) -> None:
        actor = g.actor or ""
        if not actor.startswith("agent:"):
            self.note(g, f"secrets go only to agents; {actor or 'this actor'} never gets one")
            return
        self.change(f"secrets.{actor}", g.target, g,
                    [f"hands the secret {g.target} to {actor}: whatever it runs can read it and send it "
                     "to any allowed host"])

    def _limit(self, g: DenialGroup, rule: str) -> None:
        name = LIMIT_FIELDS[rule]
        old = self.data["limits"].get(name)
        if old is None:
            self.note(g, f"limits.{name} is not set in the policy; the limit came from the caller")
            return
        new = old * 2
        key = ("limits", name)
        ch = self.changes.get(key)
        if ch is None:
            self.changes[key] = Change(rule, new, old, g.count, [g.target], [
                f"raises limits.{name} from {old} to {new}: the denial does not say how much was needed, so this "
                "doubles it; a runaway command gets that much more"])
        else:
            ch.denials += g.count

    def _override(self, g: DenialGroup, rule: str) -> None:
        rid = rule.removeprefix("rules.")
        denied_by = next((r for r in self.data["rules"] if r["id"] == rid), None)
        if denied_by is None:
            self.note(g, f"the rule {rid} that decided this is no longer in the policy")
            return
        new_rule = {"id": _rule_id(g.action, g.target, self.rule_ids), "action": g.action,
                    "match": _fnmatch_literal(g.target), "actors": [g.actor or "*"], "decision": "allow",
                    "reason": f"suggested by `loopmeter policy suggest {self.run}`"}
        for existing in self.front_rules:  # the same target and actor once
            if existing["action"] == new_rule["action"] and existing["match"] == new_rule["match"] \
                    and existing["actors"] == new_rule["actors"]:
                new_rule = existing
                break
        else:
            self.front_rules.append(new_rule)
        verb = "needs approval for" if denied_by["decision"] == "ask" else "denies"
        self.change("rules", new_rule, g, [
            f"overrides rule {rid}, which {verb} it on purpose ({denied_by.get('reason') or 'no reason given'}); "
            f"the new rule allows exactly {g.target!r} for {g.actor or 'every actor'}, placed before it"])
        self.checks.append((g.action, g.target, g.actor or "*"))

    def wildcard_notes(self) -> None:
        """A note (never a change) when several hosts under one domain were allowed one by one."""
        hosts = [c.value for c in self.changes.values() if c.field == "network.allow"]
        parents: dict[str, list[str]] = {}
        for h in hosts:
            name = h.split(":")[0]
            if "." in name and not is_ip_literal(name):
                parents.setdefault(name.split(".", 1)[1], []).append(h)
        for parent, members in parents.items():
            if len(members) >= 3 and "." in parent:
                for c in self.changes.values():
                    if c.field == "network.allow" and c.value in members:
                        c.warnings.append(f"{len(members)} hosts under {parent} are listed one by one; '*.{parent}' "
                                          f"would be one entry but allows every name under {parent} (wildcard)")

    def apply(self) -> dict[str, Any]:
        data = copy.deepcopy(self.data)
        for ch in self.changes.values():
            if ch.field in ("network.allow", "network.allow_local"):
                items = data["network"][ch.field.split(".")[1]]
                if ch.value in items:
                    continue
                if ch.field == "network.allow" and ":" in ch.value:
                    items.insert(0, ch.value)  # before a bare pattern for the host, which would refuse the port
                else:
                    items.append(ch.value)
            elif ch.field.startswith("secrets."):
                names = data["secrets"].setdefault(ch.field.split(".", 1)[1], [])
                if ch.value not in names:
                    names.append(ch.value)
            elif ch.field.startswith("limits."):
                data["limits"][ch.field.split(".", 1)[1]] = ch.value
        data["rules"] = [*self.front_rules, *data["rules"]]
        return data


def _fragment(changes: list[Change], before: dict[str, Any], after: dict[str, Any]) -> str:
    """The sections that change, as they would read after the change."""
    out: dict[str, Any] = {}
    for ch in changes:
        section, _, key = ch.field.partition(".")
        if section == "rules":
            out["rules"] = after["rules"]
        elif section == "secrets":
            out.setdefault("secrets", {})[key] = after["secrets"][key]
        else:
            out.setdefault(section, {})[key] = after[section][key]
    return yaml.safe_dump(out, sort_keys=False, default_flow_style=False, allow_unicode=False) if out else ""


def suggest(policy: Policy, groups: list[DenialGroup], run: str) -> Suggestion:
    plan = _Plan(policy, run)
    for g in groups:
        plan.add(g)
    plan.wildcard_notes()
    after = plan.apply()
    model = PolicyModel.model_validate(after)  # the suggestion is a valid policy, or this fails loudly
    suggested_policy = Policy(model, Path(f"<suggested for {run}>"), "suggested")
    unresolved = [f"{action} {target} ({actor})" for action, target, actor in plan.checks
                  if not suggested_policy.decide(action, target, actor).allowed]
    before_text = yaml.safe_dump(plan.data, sort_keys=False, default_flow_style=False)
    after_text = yaml.safe_dump(after, sort_keys=False, default_flow_style=False)
    diff = "".join(difflib.unified_diff(before_text.splitlines(keepends=True), after_text.splitlines(keepends=True),
                                        fromfile=f"{policy.name} ({policy.path}, normalised)",
                                        tofile=f"{policy.name} + suggestion for {run}", n=2))
    order = ("network.allow", "network.allow_local", "secrets", "rules", "limits")
    changes = sorted(plan.changes.values(),
                     key=lambda c: (next(i for i, f in enumerate(order) if c.field.startswith(f)), -c.denials))
    shas = sorted({s for g in groups for s in g.policy_sha256})
    return Suggestion(policy.name, str(policy.path), policy.sha256, shas, changes, plan.notes,
                      _fragment(changes, plan.data, after), after_text, diff, unresolved)


def policy_for_run(store: Any, run: str, groups: list[DenialGroup], ref: str | None = None) -> Policy:
    """The policy in force for `run`: `ref` when given; else the one the run recorded (its file or preset);
    else the preset whose sha256 the run's audit records name."""
    from loopmeter.errors import LoopmeterError
    from loopmeter.policies.loader import list_presets, load_policy

    if ref:
        return load_policy(ref)
    from loopmeter.store import Run

    row = store.get(Run, run)
    if row is not None:
        import json

        config = json.loads(row.config or "{}")
        for candidate in (config.get("policy_ref"), row.policy):
            if candidate:
                try:
                    return load_policy(candidate)
                except LoopmeterError:
                    continue
    shas = {s for g in groups for s in g.policy_sha256}
    for name in list_presets():
        p = load_policy(name)
        if p.sha256 in shas:
            return p
    raise LoopmeterError(f"cannot tell which policy run {printable(run)} used",
                         hint="pass it with --policy (a preset name or the YAML file)")


def render_text(s: Suggestion) -> str:
    """The suggestion for a person: each change with its warnings, the notes, the fragment and the diff."""
    lines = [f"policy in force: {s.policy_name} ({s.policy_path}, sha256 {s.policy_sha256[:12]})"]
    other = [x for x in s.run_policy_sha256 if x != s.policy_sha256]
    if other:
        lines.append(f"WARNING: the run's records name policy sha256 {', '.join(x[:12] for x in other)}; the file "
                     "changed since, and this suggestion is against the file as it is now")
    if not s.changes:
        lines.append("no policy change would have allowed what was denied" if s.notes else "nothing was denied")
    for ch in s.changes:
        value = ch.value if not isinstance(ch.value, dict) else f"rule {ch.value['id']} (match {ch.value['match']!r})"
        was = f" (was {ch.was})" if ch.was is not None else ""
        lines.append(f"+ {ch.field}: {printable(str(value), 120)}{was}   [{ch.denials} denials]")
        lines += [f"    WARNING: {printable(w, 300)}" for w in ch.warnings]
    if s.notes:
        lines.append("not changed:")
        lines += [f"  {printable(n.target, 60)} ({n.rule_id or '-'}, {n.count}x): {printable(n.why, 200)}"
                  for n in s.notes]
    if s.unresolved:
        lines.append("still denied by the suggested policy (please report): " + ", ".join(s.unresolved))
    if s.fragment:
        lines += ["", "# the sections that change, as they would read (nothing was written):", s.fragment.rstrip()]
        lines += ["", s.diff.rstrip()]
    return "\n".join(lines) + "\n"
