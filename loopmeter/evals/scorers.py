"""Scorers for model tasks: compare a model's answer with an item's target.

Each scorer returns a Score with a value in [0, 1] and whether it counts as passed
(value >= `pass_threshold`, default 1.0). Options come from the task's `scorer_args`.

    exact       answer == target (strip, `ignore_case`); a list target = any of them
    regex       target is a pattern searched in the answer; or with `pattern`, the
                pattern's first group (or whole match) is extracted and compared exactly
    json        the first JSON value in the answer equals target (`keys`: only those keys)
    numeric     the last number in the answer within `abs_tol` + `rel_tol` * |target|
    recall_at_k the answer is a ranked list (JSON list, or one item per line / comma);
                score = |relevant in top k| / |relevant|, k from `k` (default 5)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loopmeter.errors import ConfigError


@dataclass
class Score:
    value: float
    passed: bool
    answer: str | None = None  # what was extracted from the model's output and compared


def _norm(text: str, args: dict[str, Any]) -> str:
    text = text.strip() if args.get("strip", True) else text
    return text.lower() if args.get("ignore_case") else text


def exact(output: str, target: Any, args: dict[str, Any]) -> float:
    targets = target if isinstance(target, list) else [target]
    got = _norm(output, args)
    return 1.0 if any(got == _norm(str(t), args) for t in targets) else 0.0


def regex(output: str, target: Any, args: dict[str, Any]) -> float:
    flags = re.IGNORECASE if args.get("ignore_case") else 0
    pattern = args.get("pattern")
    if pattern is None:
        return 1.0 if re.search(str(target), output, flags) else 0.0
    match = re.search(str(pattern), output, flags)
    if not match:
        return 0.0
    got = match.group(1) if match.groups() else match.group(0)
    return exact(got, target, args)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def first_json(output: str) -> Any:
    """The first JSON value in a model's answer (inside a ``` fence if there is one)."""
    fenced = _FENCE.search(output)
    text = fenced.group(1) if fenced else output
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "[{\"-0123456789tfn":
            try:
                return decoder.raw_decode(text, i)[0]
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON value in the answer")


def json_match(output: str, target: Any, args: dict[str, Any]) -> float:
    try:
        got = first_json(output)
    except ValueError:
        return 0.0
    keys = args.get("keys")
    if keys and isinstance(got, dict) and isinstance(target, dict):
        return sum(got.get(k) == target.get(k) for k in keys) / len(keys)
    return 1.0 if got == target else 0.0


_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?|-?\.\d+")


def numeric(output: str, target: Any, args: dict[str, Any]) -> float:
    found = _NUMBER.findall(output)
    if not found:
        return 0.0
    try:
        got = float(found[-1].replace(",", ""))
        want = float(target)
    except ValueError:
        return 0.0
    tol = float(args.get("abs_tol", 1e-9)) + float(args.get("rel_tol", 0.0)) * abs(want)
    return 1.0 if math.isfinite(got) and abs(got - want) <= tol else 0.0


def ranked_list(output: str) -> list[str]:
    try:
        value = first_json(output)
        if isinstance(value, list):
            return [str(v).strip() for v in value]
    except ValueError:
        pass
    parts = re.split(r"[\n,]", output)
    return [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", p).strip() for p in parts if p.strip()]


def recall_at_k(output: str, target: Any, args: dict[str, Any]) -> float:
    relevant = {str(t).strip().lower() for t in (target if isinstance(target, list) else [target])}
    if not relevant:
        return 1.0
    k = int(args.get("k", 5))
    top = {item.lower() for item in ranked_list(output)[:k]}
    return len(relevant & top) / len(relevant)


SCORERS: dict[str, Callable[[str, Any, dict[str, Any]], float]] = {
    "exact": exact,
    "regex": regex,
    "json": json_match,
    "numeric": numeric,
    "recall_at_k": recall_at_k,
}


def get_scorer(name: str) -> Callable[[str, Any, dict[str, Any]], float]:
    if name not in SCORERS:
        raise ConfigError(f"unknown scorer '{name}'", hint="scorers: " + ", ".join(SCORERS))
    return SCORERS[name]


def score(name: str, output: str | None, target: Any, args: dict[str, Any] | None = None) -> Score:
    args = dict(args or {})
    if output is None:
        return Score(0.0, False)
    value = get_scorer(name)(output, target, args)
    return Score(value, value >= float(args.get("pass_threshold", 1.0)) - 1e-12, output.strip()[:200])
