"""`loopmeter audit`: read, verify, summarise, accept anchor mismatches in, and export the hash-chained
log of sandbox decisions.

`audit log --json`: `[{seq, ts, sandbox_id, run_id, attempt_id, actor, layer, action, target, decision,
rule_id, policy_sha256, detail, prev, hash}]`; `audit verify --json`: `{ok, records, head_seq, head_hash,
first_bad_seq, reason, anchor, problem}`; `audit summary RUN --json`: `{run, total, records, by_kind
[{layer, action, count}], by_actor [{actor, count}], denials [{layer, action, target, actor, rule_id,
decision, count, reason, first_seq, last_seq, first_ts, last_ts, policy_sha256}]}`.

Text output shows targets through `loopmeter.safe_text.printable` (control characters escaped):
a target is whatever the sandboxed code sent.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from loopmeter.errors import LoopmeterError

app = typer.Typer(help="Read, verify and export the audit log of sandbox decisions.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audit")


def _since(text: str) -> datetime:
    from loopmeter.records import utcnow

    m = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return utcnow() - timedelta(**{unit: int(m.group(1))})
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise LoopmeterError(f"--since {text!r} is not a time", hint="use e.g. 2h, 3d or 2026-01-31T12:00") from exc
    from loopmeter.store import as_utc

    return as_utc(ts if ts.tzinfo else ts.astimezone())  # a naive time is local time


@app.command("log")
def log(
    denied: Annotated[bool, typer.Option("--denied", help="Only deny and ask decisions.")] = False,
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only newer records: 2h, 3d or an ISO time.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (newest).")] = 200,
    json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Recent decisions, oldest first."""
    from sqlalchemy import select

    from loopmeter.policies.audit import canonical_ts
    from loopmeter.store import Audit, open_store

    table: Any = Audit.__table__  # type: ignore[attr-defined]
    q = select(table)
    if denied:
        q = q.where(table.c.decision != "allow")
    if run:
        q = q.where(table.c.run_id == run)
    if since:
        q = q.where(table.c.ts >= _since(since))
    q = q.order_by(table.c.seq.desc()).limit(limit)
    store = open_store()
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)][::-1]
    store.dispose()
    for r in rows:
        r["ts"] = canonical_ts(r["ts"])
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from loopmeter.safe_text import printable

    for r in rows:
        times = ""
        if r["detail"] and '"summary"' in r["detail"]:  # a rate-limit summary: how many it stands for
            try:
                times = f"  (x{int(json.loads(r['detail'])['count'])})"
            except (ValueError, KeyError, TypeError):
                times = ""
        typer.echo(f"{r['seq']:>6} {r['ts'][:19]} {printable(r['layer']):<6} {printable(r['action']):<10} "
                   f"{printable(r['decision']):<5} {printable(r['target'], 60):<60} {printable(r['rule_id'])}{times}")
    if not rows:
        typer.echo("(no audit records)")


@app.command("verify")
def verify(json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Check the hash chain and the anchors: exit 0 intact; 1 with the problem named (the first bad seq, a
    missing anchor or copy, records past the anchored head)."""
    from loopmeter.config import load_settings
    from loopmeter.policies.audit import verify_chain
    from loopmeter.store import open_store

    settings = load_settings()
    store = open_store(settings.db_url)
    result = verify_chain(store, settings.audit_anchor, settings.audit_anchor_copy)
    store.dispose()
    if json_out:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    elif result.ok:
        typer.echo(f"audit log intact: {result.records} records, head seq {result.head_seq}"
                   + (f", matches the anchor {result.anchor}" if result.anchor else " (no anchor file yet)")
                   + (f"; {result.reason}" if result.reason else ""))
    elif result.first_bad_seq is None:
        typer.echo(f"audit log NOT VERIFIED: {result.reason}", err=True)
    else:
        typer.echo(f"audit log BROKEN at seq {result.first_bad_seq}: {result.reason}", err=True)
    raise typer.Exit(0 if result.ok else 1)


@app.command("accept")
def accept(reason: Annotated[str, typer.Option("--reason", help="Why: what you checked (kept in the log).")],
           json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Accept the anchor mismatches verify reports (a missing anchor or copy, records past the anchored head,
    e.g. the one record a crash can leave): appends a record saying so, as `user`, after the evidence.
    Look at the records first (`audit log --denied`); a broken chain (edited, deleted, reordered) is never
    accepted."""
    from loopmeter.config import load_settings
    from loopmeter.policies.audit import ACCEPT_RULE, AuditLog, verify_chain
    from loopmeter.store import open_store

    settings = load_settings()
    store = open_store(settings.db_url)
    try:
        before = verify_chain(store, settings.audit_anchor, settings.audit_anchor_copy)
        if before.problem in ("gap", "order", "prev", "edited"):
            typer.echo(f"not accepted: the chain itself is broken at seq {before.first_bad_seq}: {before.reason}",
                       err=True)
            raise typer.Exit(1)
        if before.ok:
            typer.echo("nothing to accept: the audit log is intact")
            return
        log = AuditLog(store, settings.audit_anchor, settings.audit_anchor_copy)
        seq = log.append(layer="policy", action="audit", decision="allow", actor="user", rule_id=ACCEPT_RULE,
                         target="anchor", detail={"reason": reason, "accepted": before.reason,
                                                  "problem": before.problem})
        after = verify_chain(store, settings.audit_anchor, settings.audit_anchor_copy)
    finally:
        store.dispose()
    if json_out:
        typer.echo(json.dumps({"accepted_by": seq, "before": before.as_dict(), "after": after.as_dict()}, indent=2))
    else:
        typer.echo(f"record {seq} accepts: {before.reason}")
        typer.echo("audit log " + ("intact" if after.ok else f"still failing: {after.reason}"))
    raise typer.Exit(0 if after.ok else 1)


@app.command("summary")
def summary(run: Annotated[str, typer.Argument(help="Run id (or the sandbox id of a `sandbox exec`).")],
            json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """What a run was denied: counts per kind, per actor, and per target (summary records counted in)."""
    from loopmeter.config import load_settings
    from loopmeter.policies.denials import denial_rows, group_denials, totals
    from loopmeter.safe_text import printable
    from loopmeter.store import open_store

    store = open_store(load_settings().db_url)
    try:
        rows = denial_rows(store, run)
    finally:
        store.dispose()
    groups = group_denials(rows)
    data: dict[str, Any] = {"run": run, "total": sum(g.count for g in groups), "records": len(rows),
            "by_kind": totals(groups, "layer", "action"), "by_actor": totals(groups, "actor"),
            "denials": [g.as_dict() for g in groups]}
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    if not groups:
        typer.echo(f"run {printable(run)}: nothing denied (or no such run)")
        return
    typer.echo(f"run {printable(run)}: {data['total']} denials in {len(rows)} audit records")
    typer.echo("\nby kind:")
    for k in data["by_kind"]:
        typer.echo(f"  {k['count']:>8}  {printable(k['layer'])} {printable(k['action'])}")
    typer.echo("by actor:")
    for a in data["by_actor"]:
        typer.echo(f"  {a['count']:>8}  {printable(a['actor'] or '-')}")
    typer.echo("\ndenials:")
    typer.echo(f"  {'count':>8}  {'kind':<16} {'target':<50} {'actor':<20} rule")
    for g in groups:
        kind = f"{g.layer} {g.action}" + (f" ({g.decision})" if g.decision != "deny" else "")
        typer.echo(f"  {g.count:>8}  {printable(kind, 16):<16} {printable(g.target, 50):<50} "
                   f"{printable(g.actor or '-', 20):<20} {printable(g.rule_id or '')}")


@app.command("export")
def export(output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None
           ) -> None:
    """Every record as JSON Lines, with prev and hash, so the chain can be checked elsewhere."""
    from loopmeter.policies.audit import export_jsonl
    from loopmeter.store import open_store

    store = open_store()
    if output is None:
        export_jsonl(store, sys.stdout)
    else:
        with output.open("w") as fh:
            n = export_jsonl(store, fh)
        typer.echo(f"wrote {n} records to {output}", err=True)
    store.dispose()
