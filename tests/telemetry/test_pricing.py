import json

import pytest

from loopmeter.errors import ConfigError
from loopmeter.telemetry.pricing import litellm_price_file, load_price_table
from tests.conftest import FIXTURES

SUBSET = FIXTURES / "prices" / "litellm_subset.json"


@pytest.fixture
def table():
    return load_price_table(base=SUBSET)


def test_claude_cost_splits_cache_writes_into_5_minute_and_1_hour(table):
    # 4 x $3/M + 310 x $15/M + 52,000 x $0.30/M + 1,800 x $6/M (1-hour write)
    cost = table.cost("claude-sonnet-4-5-20250929", input_tokens=4, output_tokens=310,
                      cache_read_tokens=52000, cache_write_tokens=1800, cache_write_1h_tokens=1800)
    assert cost == pytest.approx(0.000012 + 0.00465 + 0.0156 + 0.0108)
    # the same writes at the 5-minute rate ($3.75/M)
    cost_5m = table.cost("claude-sonnet-4-5-20250929", input_tokens=4, output_tokens=310,
                         cache_read_tokens=52000, cache_write_tokens=1800)
    assert cost_5m == pytest.approx(0.000012 + 0.00465 + 0.0156 + 0.00675)


def test_codex_cost_prices_cached_input_at_the_read_rate(table):
    # 2,750 non-cached x $1.25/M + 750 cached x $0.125/M + 425 output x $10/M
    cost = table.cost("gpt-5-codex", input_tokens=2750, cache_read_tokens=750, output_tokens=425)
    assert cost == pytest.approx(0.0034375 + 0.00009375 + 0.00425)


def test_gemini_uses_the_above_200k_tier_for_long_prompts(table):
    assert table.cost("gemini-2.5-pro", input_tokens=250_000, output_tokens=1000) == pytest.approx(0.625 + 0.015)
    assert table.cost("gemini-2.5-pro", input_tokens=100_000, output_tokens=1000) == pytest.approx(0.125 + 0.01)


def test_provider_prefixed_names_resolve(table):
    assert table.cost("anthropic/claude-sonnet-4-5-20250929", input_tokens=1000) == pytest.approx(0.003)


def test_unknown_model_is_unpriced_not_zero(table):
    assert table.cost("my-local-qwen", input_tokens=1000, output_tokens=10) is None
    assert table.cost(None, input_tokens=1) is None


def test_user_price_file_overrides_and_adds(tmp_path):
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({"my-local-qwen": {"input_cost_per_token": 0, "output_cost_per_token": 0},
                                "gpt-5-codex": {"output_cost_per_token": 2e-05}}))
    table = load_price_table(base=SUBSET, user_file=user)
    assert table.cost("my-local-qwen", input_tokens=1000) == 0.0  # priced (free), not unpriced
    assert table.cost("gpt-5-codex", output_tokens=1000) == pytest.approx(0.02)
    assert table.overrides == str(user)
    assert table.sha256 != load_price_table(base=SUBSET).sha256


def test_a_bad_user_price_file_names_the_file_and_line(tmp_path):
    user = tmp_path / "prices.json"
    user.write_text('{\n "x": {"input_cost_per_token": 1e-6,}\n}')
    with pytest.raises(ConfigError, match=r"prices.json:2"):
        load_price_table(base=SUBSET, user_file=user)


def test_the_bundled_litellm_table_is_found_without_importing_litellm():
    import sys

    path = litellm_price_file()
    assert path is not None and path.is_file()
    table = load_price_table()
    assert table.model_count > 1000
    assert table.cost("claude-sonnet-4-5", input_tokens=1) is not None
    assert "litellm" not in sys.modules or sys.modules["litellm"] is not None


def test_entries_decoded_on_first_read_look_like_plain_json_whichever_way_they_are_read():
    import msgspec

    table = load_price_table()
    model = next(k for k in table.entries if k.startswith("claude-sonnet-4"))
    assert isinstance(table.entries[model], dict) and "input_cost_per_token" in table.entries[model]
    copied = dict(table.entries)
    assert len(copied) == len(table.entries) == table.model_count + 1  # + LiteLLM's "sample_spec"
    assert not any(isinstance(v, msgspec.Raw) for v in copied.values())
    assert dict(table.entries.items()) == copied
