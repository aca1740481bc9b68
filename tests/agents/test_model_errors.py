"""A failed model call reads the same in the built-in agent and in model tasks (one reading,
loopmeter/agents/model_errors.py): real litellm over real HTTP against the scripted server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from loopmeter.vocab import ErrorKind, StepErrorKind
from tests.conftest import free_port
from tests.servers.openai_server import OpenAIServer, Reply

SLOW = Reply(content="too late", delay_s=3.0)
TIME_LIMIT_S = 1.0


@pytest.mark.parametrize(("reply", "task_kind", "step_kind"), [
    (Reply(status=401, error="Incorrect API key provided"), ErrorKind.AUTH, StepErrorKind.AUTH),
    (SLOW, ErrorKind.TIMEOUT, StepErrorKind.TIMEOUT),
    (Reply(status=429, error="Rate limit reached"), ErrorKind.INFRA, StepErrorKind.AGENT),
    (Reply(status=500, error="The server had an error"), ErrorKind.INFRA, StepErrorKind.AGENT),
    (Reply(status=503, error="The engine is overloaded"), ErrorKind.INFRA, StepErrorKind.AGENT),
    (Reply(status=400, error="Invalid 'messages'"), ErrorKind.MODEL, StepErrorKind.AGENT),
    (None, ErrorKind.INFRA, StepErrorKind.AGENT),  # nothing listens on the port
], ids=["401", "slow", "429", "500", "503", "400", "unreachable"])
def test_a_failed_call_has_one_kind_in_model_tasks_and_in_the_builtin_agent(
        tmp_path: Path, reply: Reply | None, task_kind: ErrorKind, step_kind: StepErrorKind) -> None:
    from loopmeter.agents.base import StepContext
    from loopmeter.agents.builtin import BuiltinBackend
    from loopmeter.evals.model_tasks import load_dataset, run_item
    from loopmeter.evals.suite import load_suite

    task = dataclasses.replace(load_suite("model-arith").tasks[0], time_limit_s=TIME_LIMIT_S)
    item = load_dataset(task)[0]
    work = tmp_path / "wt"
    work.mkdir()
    model = "openai/gpt-4o-mini"

    def both(api_base: str) -> tuple[ErrorKind | None, StepErrorKind | None]:
        answer = run_item(task, item, model, run_id="r", attempt_id="a", api_base=api_base)
        step = BuiltinBackend().step(StepContext(
            run_id="r", attempt_id="b", agent="builtin", model=model, workdir=work, instruction="list the files",
            iteration=1, api_base=api_base, timeout_s=TIME_LIMIT_S))
        return answer.error_kind, step.error_kind

    if reply is None:
        kinds = both(f"http://127.0.0.1:{free_port()}/v1")
    else:
        with OpenAIServer(default=reply) as server:
            kinds = both(server.base_url)
    assert kinds == (task_kind, step_kind)
