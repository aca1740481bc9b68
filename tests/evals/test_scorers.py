"""Model-task scorers on known answers."""

from __future__ import annotations

import pytest

from loopmeter.errors import ConfigError
from loopmeter.evals.scorers import score


def test_exact_strips_and_optionally_ignores_case() -> None:
    assert score("exact", "  Paris\n", "Paris").passed
    assert not score("exact", "paris", "Paris").passed
    assert score("exact", "paris", "Paris", {"ignore_case": True}).passed
    assert score("exact", "B", ["A", "B"]).passed


def test_regex_search_and_extract() -> None:
    assert score("regex", "the code is 4711, ok", r"\b47\d\d\b").passed
    assert score("regex", "Answer: (C) because", "C", {"pattern": r"Answer:\s*\(?([A-D])"}).passed
    assert not score("regex", "Answer: (B)", "C", {"pattern": r"Answer:\s*\(?([A-D])"}).passed
    assert not score("regex", "no answer here", "C", {"pattern": r"Answer: ([A-D])"}).passed


def test_json_match_finds_the_value_inside_prose_and_fences() -> None:
    target = {"name": "ada", "age": 36}
    assert score("json", 'Here you go: {"age": 36, "name": "ada"} done', target).passed
    assert score("json", '```json\n{"name": "ada", "age": 36}\n```', target).passed
    partial = score("json", '{"name": "ada", "age": 37}', target, {"keys": ["name", "age"]})
    assert partial.value == 0.5 and not partial.passed
    assert not score("json", "not json at all", target).passed


def test_numeric_tolerance_uses_the_last_number() -> None:
    assert score("numeric", "3 apples + 4 = 7", 7).passed
    assert score("numeric", "about 1,234.5", 1234.5).passed
    assert score("numeric", "7.749", 7.75, {"abs_tol": 0.01}).passed
    assert not score("numeric", "7.7", 7.75, {"abs_tol": 0.01}).passed
    assert score("numeric", "105", 100, {"rel_tol": 0.05}).passed
    assert not score("numeric", "no digits", 1).passed


def test_recall_at_k_on_ranked_lists() -> None:
    relevant = ["a.py", "b.py"]
    assert score("recall_at_k", '["a.py", "x.py", "b.py"]', relevant, {"k": 3}).value == 1.0
    half = score("recall_at_k", "1. a.py\n2. x.py\n3. b.py", relevant, {"k": 2})
    assert half.value == 0.5 and not half.passed
    assert score("recall_at_k", "x.py, a.py", relevant, {"k": 2, "pass_threshold": 0.5}).passed


def test_unknown_scorer_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        score("bleu", "x", "y")
    assert "exact" in (info.value.hint or "")


def test_no_output_scores_zero() -> None:
    assert score("exact", None, "x").value == 0.0
