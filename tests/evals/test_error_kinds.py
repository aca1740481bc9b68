"""An errored eval cell's kind comes from the attempt's stored `error_kind`, never from its stop reason.

Real loop, real bubblewrap sandbox, real SQLite store; the model API is a scripted server on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from loopmeter.sandbox.probe import probe_bwrap
from tests.evals.conftest import small_suite
from tests.servers.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.skipif(not probe_bwrap().usable, reason="bubblewrap is not usable here")


def _rows(store: Any, run_id: str) -> list[Any]:
    from loopmeter.store import EvalResult

    with store.session() as s:
        return list(s.exec(select(EvalResult).where(EvalResult.run_id == run_id)))


def test_a_cell_whose_agent_is_not_installed_is_stored_not_installed(store: Any, tmp_path: Path) -> None:
    """What a node of a cluster does when the agent's CLI is missing there (`--executor ray` checks only
    the agents' names before it starts): the cell ends `not_installed`, not `infra`."""
    if shutil.which("cursor-agent"):
        pytest.skip("cursor-agent is installed here")
    from loopmeter.evals.runner import EvalConfig, EvalOptions, cell_specs, plan, save_result
    from loopmeter.evals.suite import load_suite
    from loopmeter.executors.base import run_cell
    from loopmeter.store import Attempt

    suite = load_suite(small_suite(tmp_path / "suite", ["fix-pagination"]))
    (spec,) = cell_specs("R-NOT-INSTALLED", suite, plan(suite, [EvalConfig("cursor")], 1), EvalOptions(), store)
    res = run_cell(spec, store)
    save_result(store, spec.run_id, suite.name, spec.cell, res)

    (row,) = _rows(store, spec.run_id)
    assert (row.passed, row.error_kind) == (False, "not_installed")
    attempt = store.get(Attempt, row.attempt_id)
    assert (attempt.status, attempt.error_kind) == ("error", "not_installed")
    assert "cursor-agent is not installed" in attempt.stop_reason  # the text for people is kept as it was


def test_a_cell_whose_key_the_model_api_refuses_is_stored_auth(store: Any, tmp_path: Path) -> None:
    from loopmeter.evals.report import summarize_run
    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.store import Attempt

    suite = small_suite(tmp_path / "suite", ["fix-pagination"])
    with OpenAIServer(default=Reply(status=401, error="Incorrect API key provided")) as server:
        outcome = start_eval(suite, ["builtin:openai/gpt-4o-mini", "nop"],
                             EvalOptions(concurrency=1, max_iters=2, api_base=server.base_url), store=store)
    assert outcome.status == "completed"
    rows = {r.config: r for r in _rows(store, outcome.run_id)}
    builtin, nop = rows["builtin:openai/gpt-4o-mini"], rows["nop"]
    assert (builtin.passed, builtin.error_kind) == (False, "auth")
    assert (nop.passed, nop.error_kind) == (False, None)  # a failed check is a failure, not an error
    attempt = store.get(Attempt, builtin.attempt_id)
    assert (attempt.status, attempt.error_kind, attempt.iterations) == ("error", "auth", 1)  # not tried again
    assert attempt.stop_reason.startswith("auth: ")
    configs = {c["config"]: c for c in summarize_run(store, outcome.run_id)["configs"]}
    assert configs["builtin:openai/gpt-4o-mini"]["error_kinds"] == {"auth": 1}


def test_an_error_attempt_stored_before_kinds_were_kept_reads_as_infra() -> None:
    from loopmeter.vocab import ErrorKind

    assert ErrorKind.of_attempt("error", None) is ErrorKind.INFRA
    assert ErrorKind.of_attempt("error", "auth") is ErrorKind.AUTH
    assert ErrorKind.of_attempt("cancelled", None) is ErrorKind.CANCELLED
    assert ErrorKind.of_attempt("failed", None) is None and ErrorKind.of_attempt("passed", None) is None


def test_a_step_keeps_its_kind_as_the_string_older_checkpoints_hold_and_three_end_the_attempt() -> None:
    # The loop's checkpoint holds an act step's error kind as its string; a checkpoint written before
    # the kinds were typed holds the same strings, so resuming it reads them back.
    from loopmeter.vocab import ErrorKind, StepErrorKind

    held = ["infra", "auth", "not_installed", "agent", "budget", "timeout", "cancelled"]
    assert [StepErrorKind(s).value for s in held] == held and len(StepErrorKind) == len(held)
    assert {s: StepErrorKind(s).attempt_error for s in held} == {
        "infra": ErrorKind.INFRA, "auth": ErrorKind.AUTH, "not_installed": ErrorKind.NOT_INSTALLED,
        "agent": None, "budget": None, "timeout": None, "cancelled": None}  # tried again, or a stop
