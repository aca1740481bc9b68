"""Denials in the audit log: bounded when they are written, grouped when they are read.

Writing (`DenialLimiter`, one per sandboxed command): a sandbox can be denied as often as it likes
(10,000 connects to one host, or to 10,000 hosts), so not every denial gets a record of its own:
- the first PER_TARGET identical denials (same layer, action, target and rule) get one record each,
  and at most PER_COMMAND denials of a command get a record of their own;
- at the end of the command, `summaries()` gives one record per (layer, action, target, rule) that
  had repeats left out (`detail.summary = "repeats"`, with `count`, `recorded`, `suppressed`), and
  one record per (layer, action, rule) for the denials that never got a record because of the
  per-command cap (`detail.summary = "targets"`: `count`, the most frequent targets with their
  counts in `targets`, and `unlisted`, the denials whose target is not listed).
So one command writes at most PER_COMMAND + PER_COMMAND + (one per rule) denial records, and holds
at most MAX_KEYS distinct targets in memory.

Reading (`group_denials`): one function turns audit rows, summary records included, into counts
per (layer, action, target, actor, rule, decision). `loopmeter audit summary` and
`loopmeter policy suggest` both use it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

PER_TARGET = 3
PER_COMMAND = 50
MAX_KEYS = 2048
LISTED_TARGETS = 20
OTHER_TARGETS = "(other targets)"

Key = tuple[str, str, str, str]  # layer, action, target, rule_id


@dataclass
class _Seen:
    count: int
    recorded: int
    reason: str


class DenialLimiter:
    """Decides which denials of one command get their own audit record; counts the rest."""

    def __init__(self, per_target: int = PER_TARGET, per_command: int = PER_COMMAND, max_keys: int = MAX_KEYS):
        self.per_target, self.per_command, self.max_keys = per_target, per_command, max_keys
        self.recorded = 0
        self.total = 0
        self.closed = False
        self._seen: dict[Key, _Seen] = {}
        self._untracked: dict[tuple[str, str, str], list[Any]] = {}  # over MAX_KEYS: [count, reason]
        self._lock = threading.Lock()

    def admit(self, layer: str, action: str, target: str, rule_id: str, reason: str) -> bool:
        """Count this denial; True when it gets a record of its own."""
        key = (layer, action, target, rule_id)
        with self._lock:
            self.total += 1
            if self.closed:  # a straggler after the summaries were written: record it, nothing is pending
                return True
            seen = self._seen.get(key)
            if seen is None:
                if len(self._seen) >= self.max_keys:
                    slot = self._untracked.setdefault((layer, action, rule_id), [0, reason])
                    slot[0] += 1
                    return False
                seen = self._seen[key] = _Seen(0, 0, reason)
            seen.count += 1
            if seen.recorded < self.per_target and self.recorded < self.per_command:
                seen.recorded += 1
                self.recorded += 1
                return True
            return False

    def summaries(self) -> list[dict[str, Any]]:
        """The records that count what `admit` left out: call once, when the command has ended."""
        with self._lock:
            self.closed = True
            out: list[dict[str, Any]] = []
            groups: dict[tuple[str, str, str], dict[str, Any]] = {}
            for (layer, action, target, rule_id), seen in self._seen.items():
                left_out = seen.count - seen.recorded
                if left_out <= 0:
                    continue
                if seen.recorded:
                    out.append({"layer": layer, "action": action, "target": target, "rule_id": rule_id,
                                "detail": {"reason": seen.reason, "summary": "repeats", "count": seen.count,
                                           "recorded": seen.recorded, "suppressed": left_out}})
                    continue
                g = groups.setdefault((layer, action, rule_id), {"reason": seen.reason, "count": 0, "targets": {}})
                g["count"] += left_out
                g["targets"][target] = left_out
            for (layer, action, rule_id), (n, reason) in self._untracked.items():
                g = groups.setdefault((layer, action, rule_id), {"reason": reason, "count": 0, "targets": {}})
                g["count"] += n
                g["untracked"] = n
            for (layer, action, rule_id), g in groups.items():
                ranked = sorted(g["targets"].items(), key=lambda kv: (-kv[1], kv[0]))
                listed = dict(ranked[:LISTED_TARGETS])
                distinct = len(g["targets"])
                out.append({"layer": layer, "action": action, "rule_id": rule_id,
                            "target": f"({distinct}{'+' if g.get('untracked') else ''} targets)",
                            "detail": {"reason": g["reason"], "summary": "targets", "count": g["count"],
                                       "distinct": distinct, "targets": listed,
                                       "unlisted": g["count"] - sum(listed.values())}})
            return out


# -- reading ---------------------------------------------------------------------------------------

@dataclass
class DenialGroup:
    """Denials of one kind (layer + action) of one target by one actor under one rule, with their count."""

    layer: str
    action: str
    target: str
    actor: str | None
    rule_id: str | None
    decision: str
    count: int = 0
    reason: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    first_ts: str | None = None
    last_ts: str | None = None
    policy_sha256: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _detail(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _expand(row: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """(target, count) pairs one record stands for."""
    detail = _detail(row.get("detail"))
    kind = detail.get("summary")
    target = row.get("target") or ""
    if kind == "repeats":
        yield target, int(detail.get("suppressed") or 0)
    elif kind == "targets":
        for t, n in (detail.get("targets") or {}).items():
            yield str(t), int(n)
        if detail.get("unlisted"):
            yield OTHER_TARGETS, int(detail["unlisted"])
    else:
        yield target, 1


def group_denials(rows: Iterable[dict[str, Any]]) -> list[DenialGroup]:
    """Audit rows (dicts with the table's columns; allow rows are skipped) -> groups, most frequent first.
    A summary record adds the denials it counts to the group of each target it names."""
    groups: dict[tuple[Any, ...], DenialGroup] = {}
    for row in rows:
        decision = row.get("decision") or ""
        if decision == "allow":
            continue
        reason = _detail(row.get("detail")).get("reason")
        ts = row.get("ts")
        ts_text = ts if isinstance(ts, str) or ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for target, n in _expand(row):
            if n <= 0:
                continue
            key = (row.get("layer"), row.get("action"), target, row.get("actor"), row.get("rule_id"), decision)
            g = groups.get(key)
            if g is None:
                g = groups[key] = DenialGroup(str(row.get("layer")), str(row.get("action")), target,
                                              row.get("actor"), row.get("rule_id"), decision,
                                              reason=reason if isinstance(reason, str) else None,
                                              first_seq=row.get("seq"), first_ts=ts_text)
            g.count += n
            g.last_seq, g.last_ts = row.get("seq"), ts_text
            sha = row.get("policy_sha256")
            if sha and sha not in g.policy_sha256:
                g.policy_sha256.append(sha)
    return sorted(groups.values(), key=lambda g: (-g.count, g.layer, g.action, g.target, g.actor or ""))


def denial_rows(store: Any, run: str) -> list[dict[str, Any]]:
    """Every deny/ask record of run `run` (or, when no run has that id, of the sandbox with that id:
    what `sandbox exec` records), in seq order."""
    from sqlalchemy import select

    from loopmeter.policies.audit import canonical_ts
    from loopmeter.store import Audit

    table: Any = Audit.__table__  # type: ignore[attr-defined]
    with store.engine.connect() as conn:
        rows: list[dict[str, Any]] = []
        for column in (table.c.run_id, table.c.sandbox_id):
            q = select(table).where(column == run, table.c.decision != "allow").order_by(table.c.seq)
            rows = [dict(r._mapping) for r in conn.execute(q)]
            if rows:
                break
            known = conn.execute(select(table.c.seq).where(column == run).limit(1)).first()
            if known is not None:
                break  # the run exists and was denied nothing
    for r in rows:
        r["ts"] = canonical_ts(r["ts"])
    return rows


def run_denials(store: Any, run: str) -> list[DenialGroup]:
    return group_denials(denial_rows(store, run))


def totals(groups: Iterable[DenialGroup], *attrs: str) -> list[dict[str, Any]]:
    """Counts summed over `attrs` (e.g. ("layer", "action") or ("actor",)), largest first."""
    sums: dict[tuple[Any, ...], int] = {}
    for g in groups:
        key = tuple(getattr(g, a) for a in attrs)
        sums[key] = sums.get(key, 0) + g.count
    return [{**dict(zip(attrs, k, strict=True)), "count": n}
            for k, n in sorted(sums.items(), key=lambda kv: (-kv[1], tuple(str(x) for x in kv[0])))]
