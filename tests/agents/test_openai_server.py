"""The scripted OpenAI server answers litellm over real HTTP, with the usage it was told to report."""

from __future__ import annotations

import os

from tests.servers.openai_server import OpenAIServer, text, tool_call


def _litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def test_litellm_gets_scripted_tool_call_and_usage() -> None:
    litellm = _litellm()
    with OpenAIServer() as server:
        server.script(tool_call("read_file", {"path": "a.py"}, prompt_tokens=120, completion_tokens=7,
                                cached_tokens=100, reasoning_tokens=3))
        server.script(text("small", prompt_tokens=1, completion_tokens=1), model="tiny")
        resp = litellm.completion(model="openai/big", api_base=server.base_url, api_key="sk-test",
                                  messages=[{"role": "user", "content": "hi"}])
        call = resp.choices[0].message.tool_calls[0]
        assert call.function.name == "read_file"
        assert resp.usage.prompt_tokens == 120
        assert resp.usage.prompt_tokens_details.cached_tokens == 100
        assert resp.usage.completion_tokens_details.reasoning_tokens == 3
        resp2 = litellm.completion(model="openai/tiny", api_base=server.base_url, api_key="sk-test",
                                   messages=[{"role": "user", "content": "hi"}])
        assert resp2.choices[0].message.content == "small"
        assert [r["model"] for r in server.requests] == ["big", "tiny"]
        assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test"


def test_streaming_reports_usage_in_last_chunk() -> None:
    litellm = _litellm()
    with OpenAIServer() as server:
        server.script(text("hello there", prompt_tokens=42, completion_tokens=4))
        stream = litellm.completion(model="openai/m", api_base=server.base_url, api_key="k", stream=True,
                                    stream_options={"include_usage": True},
                                    messages=[{"role": "user", "content": "hi"}])
        chunks = list(stream)
        content = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
        assert content == "hello there"
        usage = [getattr(c, "usage", None) for c in chunks if getattr(c, "usage", None)]
        assert usage and usage[-1].prompt_tokens == 42


def test_exhausted_script_answers_500() -> None:
    import httpx

    with OpenAIServer() as server:
        r = httpx.post(server.base_url + "/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 500
        assert "exhausted" in r.text
