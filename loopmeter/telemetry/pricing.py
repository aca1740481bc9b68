"""Prices per token, read from LiteLLM's bundled price file without importing litellm.

Where a call's price comes from, first match wins:

1. the user's price file (`price_file`, default `$LOOPMETER_HOME/prices.json`, LiteLLM's
   shape): its fields win whatever the date; fields it leaves out come from 2, else 3;
2. loopmeter's price history (`price_history.json` beside this module): dated prices of
   models LiteLLM's table no longer lists, the period holding the call's UTC date;
3. LiteLLM's bundled table (its current prices);
4. none: the call is unpriced, its cost `None`, never 0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec

from loopmeter.errors import ConfigError

PRICE_FILE_NAME = "model_prices_and_context_window_backup.json"
HISTORY_FILE = Path(__file__).with_name("price_history.json")
TIER_THRESHOLD = 200_000  # LiteLLM's "_above_200k_tokens" tier boundary
Rates = tuple[tuple[float, float, float, float, float], tuple[float, float, float, float, float]]


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


@dataclass(frozen=True)
class PricePeriod:
    """A model's prices (LiteLLM's field names, USD per token) from one UTC date to another,
    both included; `valid_to` None: no end known."""

    valid_from: str  # YYYY-MM-DD
    valid_to: str | None
    prices: Mapping[str, Any]
    source: str

    def holds(self, day: str) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


class _Dated:
    """A model's rates that depend on the call's date: per period of its history, else `fallback`."""

    __slots__ = ("periods", "fallback", "_by_day")

    def __init__(self, periods: list[tuple[PricePeriod, Rates | None]], fallback: Rates | None):
        self.periods, self.fallback = periods, fallback
        self._by_day: dict[str, Rates | None] = {}

    def at(self, day: str) -> Rates | None:
        try:
            return self._by_day[day]
        except KeyError:
            pass
        rates = self.fallback
        for period, period_rates in self.periods:
            if period.holds(day):
                rates = period_rates
                break
        if len(self._by_day) < 4096:
            self._by_day[day] = rates
        return rates


def _day(at: str | date | datetime | None) -> str:
    """The UTC date (YYYY-MM-DD) of a call: `at` is a datetime (naive means UTC), a date, the
    store's time text (naive UTC, `YYYY-MM-DD HH:MM:SS...`), or None for now."""
    if at is None:
        return datetime.now(UTC).date().isoformat()
    if isinstance(at, str):
        return at[:10]
    if isinstance(at, datetime):
        return (at.astimezone(UTC) if at.tzinfo is not None else at).date().isoformat()
    return at.isoformat()


@dataclass
class PriceTable:
    entries: MutableMapping[str, Any]  # LiteLLM's table with the user's entries merged in
    source: str
    sha256: str
    overrides: str | None = None
    # model name -> its dated prices (price_history.json), names and aliases as written there
    history: Mapping[str, list[PricePeriod]] = field(default_factory=dict)
    user_entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the user's file as written
    history_source: str | None = None
    _lower: dict[str, str] = field(default_factory=dict, repr=False)
    _history_lower: dict[str, str] = field(default_factory=dict, repr=False)
    _user_lower: dict[str, str] = field(default_factory=dict, repr=False)
    _memo: dict[tuple[str, str | None], dict[str, Any] | None] = field(default_factory=dict, repr=False)
    # (model, provider) -> per-token rates below and above the 200k tier, None if unpriced, or
    # a _Dated when they depend on the call's date
    _rates: dict[tuple[str | None, str | None], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lower = {k.lower(): k for k in self.entries}
        self._history_lower = {k.lower(): k for k in self.history}
        self._user_lower = {k.lower(): k for k in self.user_entries}

    @property
    def model_count(self) -> int:
        return sum(1 for k, v in self.entries.items() if k != "sample_spec" and isinstance(v, dict))

    def lookup(self, model: str | None, provider: str | None = None,
               at: str | date | datetime | None = None) -> dict[str, Any] | None:
        """A model's prices for a call at `at` (None: now): the user's fields over the history's
        period holding that UTC date, else over LiteLLM's entry. A name is tried as given,
        provider-prefixed, and without its provider prefix."""
        if not model:
            return None
        periods = self._periods(model, provider)
        if periods:
            day = _day(at)
            for period in periods:
                if period.holds(day):
                    user = self._user(model, provider)
                    return {**period.prices, **user} if user else dict(period.prices)
        return self._current(model, provider)

    def _current(self, model: str, provider: str | None) -> dict[str, Any] | None:
        """LiteLLM's entry with the user's merged in (no history)."""
        memo_key = (model, provider)
        if memo_key in self._memo:  # ingest prices ~150k calls per GB over a handful of models
            return self._memo[memo_key]
        self._memo[memo_key] = found = self._find(model, provider)
        return found

    @staticmethod
    def _candidates(model: str, provider: str | None) -> list[str]:
        candidates = [model]
        if provider:
            candidates.append(f"{provider}/{model}")
        if "/" in model:
            candidates.append(model.split("/", 1)[1])
            candidates.append(model.rsplit("/", 1)[1])
        return candidates

    def _find(self, model: str, provider: str | None) -> dict[str, Any] | None:
        for name in self._candidates(model, provider):
            key = self._lower.get(name.lower())
            if key is not None:
                entry = self.entries[key]
                if isinstance(entry, dict) and "input_cost_per_token" in entry:
                    return entry
        return None

    def _periods(self, model: str, provider: str | None) -> list[PricePeriod]:
        if not self._history_lower:
            return []
        for name in self._candidates(model, provider):
            key = self._history_lower.get(name.lower())
            if key is not None:
                return self.history[key]
        return []

    def _user(self, model: str, provider: str | None) -> Mapping[str, Any] | None:
        for name in self._candidates(model, provider):
            key = self._user_lower.get(name.lower())
            if key is not None:
                return self.user_entries[key]
        return None

    def _rates_of(self, model: str | None, provider: str | None) -> Any:
        """What `_rates` keeps for a model: its rates, None (unpriced), or a _Dated."""
        if not model:
            return None
        current = self._current(model, provider)
        fallback = None if current is None else _rates_of_entry(current)
        periods = self._periods(model, provider)
        if not periods:
            return fallback
        user = self._user(model, provider)
        dated = []
        for period in periods:
            entry = {**period.prices, **user} if user else period.prices
            dated.append((period, _rates_of_entry(entry) if "input_cost_per_token" in entry else None))
        return _Dated(dated, fallback)

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
        at: str | date | datetime | None = None,
    ) -> float | None:
        """USD for one call made at `at` (None: now) from split tokens; None when the model
        has no price then.

        `input_tokens` is the non-cached input; `cache_write_tokens` is all cache
        writes, of which `cache_write_1h_tokens` were 1-hour writes (priced at the
        `_above_1hr` rate where the table has one). Output includes reasoning.
        Above 200k prompt tokens, the `_above_200k_tokens` rates apply to the whole call.
        """
        return self.cost_of(model, provider, input_tokens or 0, output_tokens or 0, cache_read_tokens or 0,
                            cache_write_tokens or 0, cache_write_1h_tokens or 0, at if at is None else _day(at))

    def cost_of(self, model: str | None, provider: str | None, inp: int, out: int, cr: int, cw: int,
                cw1h: int, at: str | None = None) -> float | None:
        """`cost` with positional token counts (none may be None): log ingest calls it ~150k times
        per GB. `at` is the call's time as the store's text (naive UTC) or a YYYY-MM-DD date;
        None: now."""
        key = (model, provider)
        rates = self._rates.get(key)
        if rates is None:
            if key in self._rates:
                return None
            self._rates[key] = rates = self._rates_of(model, provider)
            if rates is None:
                return None
        if rates.__class__ is _Dated:
            rates = rates.at(_day(at))
            if rates is None:
                return None
        cw1h = min(cw1h, cw)
        in_rate, out_rate, read_rate, write_rate, write_1h_rate = rates[inp + cr + cw > TIER_THRESHOLD]
        return inp * in_rate + out * out_rate + cr * read_rate + (cw - cw1h) * write_rate + cw1h * write_1h_rate


def _rates_of_entry(entry: Mapping[str, Any]) -> Rates:
    return _tier_rates(entry, ""), _tier_rates(entry, "_above_200k_tokens")


def _tier_rates(entry: Mapping[str, Any], tier: str) -> tuple[float, float, float, float, float]:
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


_RATE_FIELDS = ("input_cost_per_token", "output_cost_per_token")


def _check_day(text: Any, where: str) -> str:
    try:
        if not isinstance(text, str) or len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a date (YYYY-MM-DD)") from None


def parse_history(raw: bytes, where: str) -> dict[str, list[PricePeriod]]:
    """A price history file: {"models": {name: {"aliases": [...], "prices": [period, ...]}}},
    each period with valid_from, valid_to (or null), source and LiteLLM's per-token fields.
    Periods of a model are sorted and may not overlap."""
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}:{exc.lineno}: price history is not valid JSON ({exc.msg})") from exc
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise ConfigError(f"{where}: a price history is an object with \"models\"")
    out: dict[str, list[PricePeriod]] = {}
    for name, spec in models.items():
        at = f"{where}: {name}"
        if not isinstance(spec, dict) or not isinstance(spec.get("prices"), list) or not spec["prices"]:
            raise ConfigError(f"{at}: needs a non-empty list of \"prices\"")
        periods = []
        for item in spec["prices"]:
            if not isinstance(item, dict):
                raise ConfigError(f"{at}: each price is an object")
            start = _check_day(item.get("valid_from"), at)
            end = None if item.get("valid_to") is None else _check_day(item.get("valid_to"), at)
            if end is not None and end < start:
                raise ConfigError(f"{at}: valid_to {end} is before valid_from {start}")
            source = item.get("source")
            if not isinstance(source, str) or not source.strip():
                raise ConfigError(f"{at}: each price names its source")
            prices = {k: v for k, v in item.items() if k not in ("valid_from", "valid_to", "source")}
            for k, v in prices.items():
                if not k.endswith(("_cost_per_token", "_token_cost", "_above_1hr", "_above_200k_tokens")) \
                        or isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise ConfigError(f"{at}: {k} = {v!r} is not a price per token")
            if any(f not in prices for f in _RATE_FIELDS):
                raise ConfigError(f"{at}: each price has {' and '.join(_RATE_FIELDS)}")
            periods.append(PricePeriod(start, end, prices, source))
        periods.sort(key=lambda p: p.valid_from)
        for a, b in zip(periods, periods[1:], strict=False):
            if a.valid_to is None or a.valid_to >= b.valid_from:
                raise ConfigError(f"{at}: periods from {a.valid_from} and {b.valid_from} overlap")
        aliases = spec.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(x, str) for x in aliases):
            raise ConfigError(f"{at}: aliases are a list of names")
        for key in (name, *aliases):
            if key in out:
                raise ConfigError(f"{where}: {key} appears twice")
            out[key] = periods
    return out


def load_price_table(base: Path | None = None, user_file: Path | None = None,
                     history_file: Path | None = HISTORY_FILE) -> PriceTable:
    """Load the bundled LiteLLM table and loopmeter's price history, then a user's override file."""
    base = base or litellm_price_file()
    entries: MutableMapping[str, Any] = {}
    digest = hashlib.sha256()
    source = "none"
    if base is not None and base.is_file():
        raw = base.read_bytes()
        entries = _Entries(msgspec.json.decode(raw, type=dict[str, msgspec.Raw]))
        digest.update(raw)
        source = str(base)
    history: dict[str, list[PricePeriod]] = {}
    history_source = None
    if history_file is not None and history_file.is_file():
        raw = history_file.read_bytes()
        history = parse_history(raw, str(history_file))
        digest.update(raw)
        history_source = str(history_file)
    overrides = None
    user_entries: dict[str, Any] = {}
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
        user_entries = extra
        digest.update(raw)
        overrides = str(user_file)
    return PriceTable(entries=entries, source=source, sha256=digest.hexdigest(), overrides=overrides,
                      history=history, user_entries=user_entries, history_source=history_source)


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
