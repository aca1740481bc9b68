"""Prices per token, read from LiteLLM's bundled price file without importing litellm.

A user file `$LOOPMETER_HOME/prices.json` (same shape) overrides or adds entries.
A model with no known price costs `None` (unpriced), never 0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec

from loopmeter.errors import ConfigError

PRICE_FILE_NAME = "model_prices_and_context_window_backup.json"
TIER_THRESHOLD = 200_000  # LiteLLM's "_above_200k_tokens" tier boundary


def litellm_price_file() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_FILE_NAME
    return path if path.is_file() else None


class _Entries(MutableMapping[str, Any]):
    """Model name -> price entry, each entry decoded from its JSON text when first read:
    LiteLLM's table holds ~5,000 models and a log ingest prices a handful, so decoding all of
    them (12 ms) at every first `usage` was most of loading the table (now ~3 ms). Every way
    of reading it (items, values, dict(), ==) goes through __getitem__, so no undecoded
    value leaks out."""

    def __init__(self, raw: dict[str, Any]):
        self._data = raw

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if value.__class__ is msgspec.Raw:
            value = self._data[key] = msgspec.json.decode(value)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


@dataclass
class PriceTable:
    entries: MutableMapping[str, Any]
    source: str
    sha256: str
    overrides: str | None = None
    _lower: dict[str, str] = field(default_factory=dict, repr=False)
    _memo: dict[tuple[str, str | None], dict[str, Any] | None] = field(default_factory=dict, repr=False)
    # (model, provider) -> per-token rates below and above the 200k tier, or None if unpriced
    _rates: dict[tuple[str | None, str | None], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lower = {k.lower(): k for k in self.entries}

    @property
    def model_count(self) -> int:
        return sum(1 for k, v in self.entries.items() if k != "sample_spec" and isinstance(v, dict))

    def lookup(self, model: str | None, provider: str | None = None) -> dict[str, Any] | None:
        """Find a model's entry: exact, provider-prefixed, without provider prefix, without date suffix."""
        if not model:
            return None
        memo_key = (model, provider)
        if memo_key in self._memo:  # ingest prices ~150k calls per GB over a handful of models
            return self._memo[memo_key]
        self._memo[memo_key] = found = self._find(model, provider)
        return found

    def _find(self, model: str, provider: str | None) -> dict[str, Any] | None:
        candidates = [model]
        if provider:
            candidates.append(f"{provider}/{model}")
        if "/" in model:
            candidates.append(model.split("/", 1)[1])
            candidates.append(model.rsplit("/", 1)[1])
        for name in candidates:
            key = self._lower.get(name.lower())
            if key is not None:
                entry = self.entries[key]
                if isinstance(entry, dict) and "input_cost_per_token" in entry:
                    return entry
        return None

    def cost(
        self,
        model: str | None,
        *,
        input_tokens: int | None = 0,
        output_tokens: int | None = 0,
        cache_read_tokens: int | None = 0,
        cache_write_tokens: int | None = 0,
        cache_write_1h_tokens: int | None = 0,
        provider: str | None = None,
    ) -> float | None:
        """USD for one call from split tokens; None when the model has no price.

        `input_tokens` is the non-cached input; `cache_write_tokens` is all cache
        writes, of which `cache_write_1h_tokens` were 1-hour writes (priced at the
        `_above_1hr` rate where the table has one). Output includes reasoning.
        Above 200k prompt tokens, the `_above_200k_tokens` rates apply to the whole call.
        """
        return self.cost_of(model, provider, input_tokens or 0, output_tokens or 0, cache_read_tokens or 0,
                            cache_write_tokens or 0, cache_write_1h_tokens or 0)

    def cost_of(self, model: str | None, provider: str | None, inp: int, out: int, cr: int, cw: int,
                cw1h: int) -> float | None:
        """`cost` with positional token counts (none may be None): log ingest calls it ~150k times per GB."""
        key = (model, provider)
        rates = self._rates.get(key)
        if rates is None:
            if key in self._rates:
                return None
            entry = self.lookup(model, provider)
            self._rates[key] = rates = None if entry is None else (_tier_rates(entry, ""),
                                                                   _tier_rates(entry, "_above_200k_tokens"))
            if rates is None:
                return None
        cw1h = min(cw1h, cw)
        in_rate, out_rate, read_rate, write_rate, write_1h_rate = rates[inp + cr + cw > TIER_THRESHOLD]
        return inp * in_rate + out * out_rate + cr * read_rate + (cw - cw1h) * write_rate + cw1h * write_1h_rate


def _tier_rates(entry: dict[str, Any], tier: str) -> tuple[float, float, float, float, float]:
    """(input, output, cache read, cache write, 1-hour cache write) per token for one tier: a
    tier's own rate where the table has one, else the base rate; cache rates fall back to input."""

    def rate(name: str, fallback: float | None = None) -> float:
        if tier and entry.get(name + tier) is not None:
            return float(entry[name + tier])
        value = entry.get(name)
        if value is None:
            return float(fallback or 0.0)
        return float(value)

    in_rate = rate("input_cost_per_token")
    write_rate = rate("cache_creation_input_token_cost", in_rate)
    return (in_rate, rate("output_cost_per_token"), rate("cache_read_input_token_cost", in_rate), write_rate,
            float(entry.get("cache_creation_input_token_cost_above_1hr") or write_rate))


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_price_table(base: Path | None = None, user_file: Path | None = None) -> PriceTable:
    """Load the bundled LiteLLM table, then apply a user's override file."""
    base = base or litellm_price_file()
    entries: MutableMapping[str, Any] = {}
    digest = hashlib.sha256()
    source = "none"
    if base is not None and base.is_file():
        raw = base.read_bytes()
        entries = _Entries(msgspec.json.decode(raw, type=dict[str, msgspec.Raw]))
        digest.update(raw)
        source = str(base)
    overrides = None
    if user_file is not None and user_file.is_file():
        raw = user_file.read_bytes()
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{user_file}:{exc.lineno}: price file is not valid JSON ({exc.msg})",
                hint="the file maps model names to {input_cost_per_token: ..., output_cost_per_token: ...}",
            ) from exc
        if not isinstance(extra, dict):
            raise ConfigError(f"{user_file}: price file must be a JSON object of model -> prices")
        for model, prices in extra.items():
            if not isinstance(prices, dict):
                raise ConfigError(f"{user_file}: entry '{model}' must be an object of prices")
            entries[model] = {**entries.get(model, {}), **prices}
        digest.update(raw)
        overrides = str(user_file)
    return PriceTable(entries=entries, source=source, sha256=digest.hexdigest(), overrides=overrides)


@lru_cache(maxsize=4)
def _cached(home: str, price_file: str | None) -> PriceTable:
    user = Path(price_file) if price_file else Path(home) / "prices.json"
    return load_price_table(user_file=user)


def default_price_table() -> PriceTable:
    """The price table for the configured home (cached per process)."""
    from loopmeter.config import load_settings

    settings = load_settings()
    pf = os.fspath(settings.price_file) if settings.price_file else None
    return _cached(os.fspath(settings.home), pf)
