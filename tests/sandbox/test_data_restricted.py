"""data-restricted: datasets read-only, no network, every file opened under the data dir audited."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from loopmeter.policies import load_policy
from loopmeter.store import Audit


def test_data_dir_is_read_only_and_each_opened_file_is_recorded(runner, store, workdir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "a.csv").write_text("x,y\n1,2\n")
    (data / "labels.csv").write_text("l\n")
    (data / "untouched.csv").write_text("u\n")
    res = runner.run(["sh", "-c", f"cat {data}/train/a.csv {data}/labels.csv {data}/labels.csv; "
                                  f"echo x > {data}/new.csv || echo READ-ONLY"],
                     workdir=workdir, policy=load_policy("data-restricted"), role="check", actor="check",
                     extra_ro_binds=[data])
    assert "1,2" in res.stdout and "READ-ONLY" in res.stdout and not (data / "new.csv").exists()
    with store.engine.connect() as conn:
        rows = conn.execute(select(Audit.__table__).where(Audit.__table__.c.action == "read")).all()
    targets = sorted(r.target for r in rows)
    assert targets == [str(data / "labels.csv"), str(data / "train" / "a.csv")]
    assert all(r.layer == "kernel" and r.decision == "allow" for r in rows)


def test_data_restricted_has_no_network_and_hands_out_no_secrets(runner, workdir: Path) -> None:
    res = runner.run(["sh", "-c", "env"], workdir=workdir, policy=load_policy("data-restricted"), role="agent",
                     actor="agent:claude-code", secrets={"ANTHROPIC_API_KEY": "sk-data-test"})
    assert "sk-data-test" not in res.stdout and "HTTPS_PROXY" not in res.stdout
