"""With a PostgreSQL store the loop checkpoints into that database, so a run resumes from any machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, resume_run, start_run


def test_checkpoints_live_in_postgresql_and_another_home_resumes_the_run(
        pg_store, fix_add_task, sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopmeter.config import load_settings

    home_a = load_settings().home
    result = start_run(RunRequest(instruction=fix_add_task.instruction, check=fix_add_task.check, repo=None,
                                  task=fix_add_task, agents=[AgentSpec("oracle")], sandbox=sandbox,
                                  budgets=Budgets(max_iters=1)), store=pg_store)
    assert result.status == "passed"
    assert not load_settings().checkpoint_path.exists()  # nothing in this machine's SQLite file
    with pg_store.engine.connect() as conn:
        import sqlalchemy

        threads = {r[0] for r in conn.execute(sqlalchemy.text("select distinct thread_id from checkpoints"))}
    assert result.run_id in threads and f"{result.run_id}/{result.attempts[0].id}" in threads

    monkeypatch.setenv("LOOPMETER_HOME", str(tmp_path / "another-machine"))
    assert load_settings().home != home_a
    again = resume_run(result.run_id, store=pg_store)  # finds the finished run's checkpoint
    assert again.status == "passed" and again.winner == result.winner


def test_cells_starting_at_once_on_a_fresh_database_all_get_a_checkpointer(pg_store, tmp_path: Path) -> None:
    import threading

    from loopmeter.agents.loop_graph import open_checkpointer

    barrier = threading.Barrier(4)
    results: list[object] = []

    def start() -> None:
        barrier.wait()
        try:
            conn, saver = open_checkpointer(tmp_path / "unused.db", pg_store)
            results.append(saver)
            conn.close()
        except Exception as exc:  # noqa: BLE001 - the test reports it
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 4 and not [r for r in results if isinstance(r, Exception)], results
