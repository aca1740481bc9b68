"""`--sandbox none`: runs the command directly, only when asked for by name.

Every command it runs is announced on stderr (one warning line each time, not once per
process) and recorded in the audit log with `rule_id = sandbox.none`. Made without a store
or an audit log, it writes to the default one: there is no silent unsandboxed run. The command
runs under a reaper (loopmeter.sandbox.reaper): nothing it starts outlives it, or the process
that ran it, even when that process is SIGKILLed.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from loopmeter.records import ExecResult
from loopmeter.sandbox.reaper import Reaper
from loopmeter.sandbox.runner import EXIT_NO_SANDBOX, Runner
from loopmeter.sandbox.spec import inner_path

WARNING = "loopmeter: warning: running WITHOUT a sandbox (--sandbox none), with your user's full access: {cmd}"


class UnsandboxedRunner(Runner):
    kind = "none"
    enforces = ("env",)

    def __init__(self, *, store: Any = None, audit: Any = None):
        super().__init__(store=store, audit=audit)
        if self.audit is None:
            from loopmeter.policies.audit import AuditLog

            self.audit = AuditLog.default()

    def _run(self, argv: list[str], **kw: Any) -> ExecResult:
        ctx, policy = kw["ctx"], kw["policy"]
        shown = "".join(c if c.isprintable() else "?" for c in shlex.join(argv))
        print(WARNING.format(cmd=shown[:300]), file=sys.stderr, flush=True)
        home = Path(kw["home"]) if kw["home"] is not None else Path(os.path.expanduser("~"))
        env, handed, refused = self.build_env(policy, kw["role"], kw["actor"], kw["env"], kw["secrets"], home,
                                              inner_path())
        env.update(handed)
        self._audit(ctx, layer="policy", action="exec", target=shlex.join(argv), decision="allow",
                    rule_id="sandbox.none",
                    detail={"runner": "none", "sandboxed": False, "role": kw["role"], "secrets": sorted(handed),
                            "warning": "ran WITHOUT a sandbox because --sandbox none was asked for"})
        denials = []
        for name in refused:
            denials.append({"layer": "policy", "action": "env", "target": name, "decision": "deny",
                            "rule_id": "secrets.not-for-actor", "reason": f"secret {name} not handed to {kw['actor']}"})
            self._audit(ctx, layer="policy", action="env", target=name, decision="deny",
                        rule_id="secrets.not-for-actor", detail={"reason": "not for this actor"})
        limits = policy.model.limits
        reaper = Reaper(list(argv))  # the command's whole tree dies with this process, however it dies
        try:
            result = self._execute(reaper.argv, env=env, cwd=kw["workdir"], stdin=kw["stdin"],
                                   timeout_s=kw["timeout_s"], cancel=kw["cancel"], on_output=kw["on_output"],
                                   output_limit=limits.output_kb * 1024 if limits.output_kb else None,
                                   pass_fds=reaper.pass_fds, on_started=reaper.started, kill_tree=reaper.kill_tree)
        finally:
            reaper.close()
        if reaper.start_error is not None:
            result = ExecResult(EXIT_NO_SANDBOX, "", f"loopmeter: cannot start {argv[0]}: {reaper.start_error}\n",
                                wall_s=result.wall_s, killed_reason="start")
        result.denials = denials
        return result
