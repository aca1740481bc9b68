"""`loopmeter doctor`: what is set up and what is missing, each with a one-line hint.

The `--json` keys are stable (documented in docs/troubleshooting.md):
`version, home, config_sources, ignored_settings [{file, key, value, reason, allow}], db {url, ok, schema_version, expected_schema_version, error, hint},
sandbox {runner, found, path, version, userns, usable, error, hint},
agents [{name, command, found, path, version, hint}], windsurf {headless, note},
keys {keyring, providers [{provider, env_var, present, where}]},
prices {source, sha256, models, overrides, hint},
limits {version, limits, per_process_only, text, hint, child_file_size_kills, child_file_size_note}`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import typer

AGENT_CLIS = [
    ("claude-code", "claude", "npm install -g @anthropic-ai/claude-code"),
    ("codex", "codex", "npm install -g @openai/codex"),
    ("cursor", "cursor-agent", "curl https://cursor.com/install -fsS | bash"),
    ("gemini", "gemini", "npm install -g @google/gemini-cli"),
    ("aider", "aider", "python -m pip install aider-install && aider-install"),
]
WINDSURF_NOTE = "Windsurf has no headless agent CLI, so loopmeter cannot drive it; use its editor by hand."


def register(root: typer.Typer) -> None:
    root.command("doctor")(doctor)


def _agent(name: str, command: str, hint: str) -> dict[str, Any]:
    path = shutil.which(command)
    version = None
    if path:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
            text = (out.stdout or out.stderr).strip().splitlines()
            version = text[0].strip() if text else None
        except (OSError, subprocess.TimeoutExpired):
            version = None
    return {"name": name, "command": command, "found": bool(path), "path": path, "version": version,
            "hint": None if path else f"not installed: {hint}"}


def _db(settings: Any) -> dict[str, Any]:
    from loopmeter.config import mask_url

    info: dict[str, Any] = {"url": mask_url(settings.db_url), "ok": False, "schema_version": None,
                            "expected_schema_version": None, "error": None, "hint": None}
    try:
        from loopmeter.store import SCHEMA_VERSION, open_store

        info["expected_schema_version"] = SCHEMA_VERSION
        store = open_store(settings.db_url)
        info["schema_version"] = store.schema_version()
        info["ok"] = True
        store.dispose()
    except Exception as exc:  # doctor reports, it does not fail
        info["error"] = str(exc).splitlines()[0]
        info["hint"] = getattr(exc, "hint", None) or "check LOOPMETER_DB_URL and that the database is reachable"
    return info


def _prices(settings: Any) -> dict[str, Any]:
    from loopmeter.telemetry.pricing import load_price_table

    user = settings.price_file or settings.home / "prices.json"
    try:
        table = load_price_table(user_file=user)
    except Exception as exc:
        return {"source": None, "sha256": None, "models": 0, "overrides": str(user), "hint": str(exc)}
    return {"source": table.source, "sha256": table.sha256, "models": table.model_count,
            "overrides": table.overrides,
            "hint": None if table.model_count else "install litellm (it ships the price table) or add prices.json"}


def _limits() -> dict[str, Any]:
    from loopmeter.sandbox.limits import doctor_report

    return doctor_report()


def collect() -> dict[str, Any]:
    from loopmeter import __version__
    from loopmeter.config import load_settings
    from loopmeter.sandbox.probe import probe_bwrap
    from loopmeter.secrets import keyring_usable, status

    settings = load_settings()
    with ThreadPoolExecutor(max_workers=8) as pool:
        agents_f = [pool.submit(_agent, *a) for a in AGENT_CLIS]
        sandbox_f = pool.submit(probe_bwrap)
        db_f = pool.submit(_db, settings)
        prices_f = pool.submit(_prices, settings)
        limits_f = pool.submit(_limits)
        ok, why = keyring_usable()
        keys = [k.__dict__ for k in status(use_keyring=ok)]
        return {
            "version": __version__,
            "home": str(settings.home),
            "config_sources": settings.sources,
            "ignored_settings": [dataclasses.asdict(i) for i in settings.ignored],
            "db": db_f.result(),
            "sandbox": sandbox_f.result().as_dict(),
            "agents": [f.result() for f in agents_f],
            "windsurf": {"headless": False, "note": WINDSURF_NOTE},
            "keys": {"keyring": why if ok else None,
                     "keyring_hint": None if ok else f"{why}; set provider keys as environment variables",
                     "providers": keys},
            "prices": prices_f.result(),
            "limits": limits_f.result(),
        }


def doctor(json_out: Annotated[bool, typer.Option("--json", help="JSON output (stable keys).")] = False) -> None:
    """Check the data directory, store, sandbox, agent CLIs, API keys and prices."""
    report = collect()
    if json_out:
        typer.echo(json.dumps(report, indent=2))
        return

    def line(ok: bool, label: str, text: str, hint: str | None = None) -> None:
        mark = "ok  " if ok else "--  "
        typer.echo(f"{mark}{label:<14} {text}")
        if hint and not ok:
            typer.echo(f"    {'':<14} hint: {hint}")

    typer.echo(f"loopmeter {report['version']}")
    line(True, "home", report["home"])
    for ignored in report["ignored_settings"]:
        line(False, "repo setting", f"{ignored['key']} = {ignored['value']} in {ignored['file']} was ignored: "
             f"{ignored['reason']}", ignored["allow"])
    db = report["db"]
    line(db["ok"], "store", f"{db['url']} (schema {db['schema_version']})" if db["ok"] else f"{db['url']}: {db['error']}", db["hint"])
    sb = report["sandbox"]
    text = f"bwrap {sb['version']} at {sb['path']}, user namespaces {'usable' if sb['userns'] else 'NOT usable'}" if sb["found"] else "bubblewrap not found"
    line(sb["usable"], "sandbox", text, sb["hint"])
    lim = report["limits"]  # says plainly when CPU/memory/process limits are per process only
    line(not lim["per_process_only"], "limits", lim["text"], lim["hint"])
    line(lim["child_file_size_kills"], "file size", lim["child_file_size_note"])
    for a in report["agents"]:
        line(a["found"], a["name"], f"{a['version'] or '?'} ({a['path']})" if a["found"] else "not found", a["hint"])
    line(False, "windsurf", "no headless CLI", report["windsurf"]["note"])
    keys = report["keys"]
    present = [f"{k['provider']} ({k['where']})" for k in keys["providers"] if k["present"]]
    line(bool(present), "api keys", ", ".join(present) if present else "none",
         "loopmeter auth set PROVIDER, or export e.g. ANTHROPIC_API_KEY")
    if keys["keyring"] is None:
        line(False, "keyring", "unavailable", keys["keyring_hint"])
    pr = report["prices"]
    line(pr["models"] > 0, "prices", f"{pr['models']} models, sha256 {str(pr['sha256'])[:12]} ({pr['source']})", pr["hint"])
