"""`loopmeter demo` on a pipe, in a temporary home: the main job a newcomer runs first."""

import os
import re
import subprocess

from sqlalchemy import func, select

from loopmeter.store import Attempt, Audit, EvalResult, Run, Usage, open_store
from loopmeter.store.models import PullRequest
from tests.conftest import loopmeter_cmd


def test_demo_without_a_tty_prints_the_report_and_fills_the_store(tmp_path):
    home = tmp_path / "demo-home"
    env = dict(os.environ, LOOPMETER_HOME=str(home), HOME=str(tmp_path / "user"))
    out = subprocess.run(loopmeter_cmd("demo"), env=env, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    report, progress = out.stdout, out.stderr

    # it says where its data lives and how to remove it
    assert f"rm -rf {home}" in progress
    # the printed report: attempts of both agents, an eval verdict, audit records
    agent_rows = re.findall(r"^\| (oracle|nop) \| (\d+) \|", report, re.M)
    assert {name for name, _ in agent_rows} == {"oracle", "nop"}
    assert sum(int(n) for _, n in agent_rows) >= 2
    assert re.search(r"oracle minus nop = \+100\.0 pts.*-> oracle better", report)
    allow = re.search(r"^\| allow \| (\d+) \|", report, re.M)
    assert allow and int(allow.group(1)) > 0 and "Chain: **ok**" in report

    store = open_store(f"sqlite:///{home / 'loopmeter.db'}")
    with store.session() as s:
        def count(model, *where):
            return s.exec(select(func.count()).select_from(model).where(*where)).one()[0]

        assert count(Run, Run.kind == "loop") == 1
        assert s.exec(select(func.count(func.distinct(EvalResult.run_id)))).one()[0] == 1
        assert count(Attempt, Attempt.status == "passed", Attempt.agent == "oracle") >= 1
        assert count(Attempt, Attempt.agent == "nop", Attempt.status != "passed") >= 1
        assert count(EvalResult, EvalResult.passed.is_(True)) == count(EvalResult, EvalResult.agent == "oracle")
        assert count(Audit) == int(allow.group(1)) + count(Audit, Audit.decision != "allow")
        assert count(Usage, Usage.project.like("%sample/%")) > 0  # sample logs, labelled as such
        # `outcomes sync` on the sample repositories (local git): per repository a merged PR, a
        # merged then reverted one, a squashed one
        assert count(PullRequest, PullRequest.repo.like("example.com/sample/%")) == 9
        assert count(PullRequest, PullRequest.state == "merged", PullRequest.reverted_at.is_not(None)) == 3
    # the report ties the sample sessions' spend to those PRs, the rest shown beside it
    per_pr = re.search(r"^\| pull requests \| cost per merged PR \(attributed\) \| \$(\d+\.\d\d) \|", report, re.M)
    assert per_pr and float(per_pr.group(1)) > 0
    assert re.search(r"^\| pull requests \| unattributed spend \(no PR\) \| \$\d+\.\d\d in \d+ sessions \|",
                     report, re.M)
    assert re.search(r"^\| claude-code \| \d+ \| \d+ \| 100% \|", report, re.M)  # Pull requests by agent
    store.dispose()
