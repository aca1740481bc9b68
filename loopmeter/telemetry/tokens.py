"""Each vendor's token counts in the store's terms: one function per vendor, called by every
reader of that vendor's counts (an agent's JSON output, its logs on disk, its OTLP export,
the vendor's admin API, a litellm response).

The store keeps a call's input as the part billed at the full input price (neither read from
nor written to the cache), cache reads and cache writes apart (the 1-hour share of the writes
apart again), output with any reasoning included, and reasoning apart. Vendors count so:

- Anthropic: `input_tokens` excludes cache reads and writes; taken as they are.
- OpenAI (and litellm's usage for every provider): the input count includes the cached tokens
  and any cache writes; output includes reasoning.
- Gemini: the prompt count includes cached content; tool-use prompt tokens are billed as
  input; output (candidates) excludes the thoughts.

A count a vendor did not report is None. Parts larger than their whole (more cached tokens than
input) are not a call's counts: `TokenCountError`, which each reader treats as its bad input
(a log line counted as malformed, an OTLP record rejected, an admin API row refused, and for a
call an agent made, a row whose counts are unknown: `or_unknown`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

# Token counts are never negative, and no call reads or writes a trillion tokens: a bigger
# count is malformed. The bound keeps every sum the store makes (hourly rollup, reports)
# inside a 64-bit column for millions of such calls.
MAX_TOKENS = 10**12


class TokenCountError(ValueError):
    """A vendor's token counts that contradict each other."""


class Counts(NamedTuple):
    """One call's tokens under the store's names (the UsageRow and UsageParams fields)."""

    input_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None


def anthropic(input_tokens: int | None, cache_read: int | None, cache_write: int | None, output: int | None,
              cache_write_1h: int | None = None) -> Counts:
    """Anthropic's Messages usage (`input_tokens`, `cache_read_input_tokens`,
    `cache_creation_input_tokens` with its `ephemeral_1h_input_tokens` share, `output_tokens`)."""
    return Counts(input_tokens, cache_read, cache_write, cache_write_1h, output, None)


def openai(input_tokens: int | None, cached: int | None, output: int | None, reasoning: int | None = None,
           cache_write: int | None = None) -> Counts:
    """OpenAI's counts (Codex, the Responses and Chat Completions APIs, the Admin API, and
    litellm's usage for any provider): `input_tokens` include `cached` and `cache_write`."""
    if input_tokens is None:
        return Counts(None, None, None, None, output, reasoning)
    read, written = cached or 0, cache_write or 0
    if read + written > input_tokens:
        raise TokenCountError(f"cached ({read}) plus cache-write ({written}) tokens exceed the input ({input_tokens})")
    return Counts(input_tokens - read - written, read, cache_write, None, output, reasoning)


def gemini(prompt: int | None, cached: int | None, candidates: int | None, thoughts: int | None,
           tool_prompt: int | None = None) -> Counts:
    """Gemini's counts (`promptTokenCount` including `cachedContentTokenCount`,
    `candidatesTokenCount` without `thoughtsTokenCount`, `toolUsePromptTokenCount`)."""
    if prompt is not None and cached is not None and cached > prompt:
        raise TokenCountError(f"cached ({cached}) tokens exceed the prompt ({prompt})")
    input_tokens = None if prompt is None else prompt - (cached or 0) + (tool_prompt or 0)
    output = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return Counts(input_tokens, cached, None, None, output, thoughts)


def litellm_usage(usage: Any) -> Counts:
    """A litellm response's `usage` (OpenAI's shape for every provider: `prompt_tokens` include
    the cached tokens and, for Anthropic, `cache_creation_input_tokens`)."""
    details = getattr(usage, "prompt_tokens_details", None)
    return openai(getattr(usage, "prompt_tokens", None), getattr(details, "cached_tokens", None),
                  getattr(usage, "completion_tokens", None),
                  getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", None),
                  getattr(usage, "cache_creation_input_tokens", None))


def or_unknown(normalise: Callable[..., Counts], *args: Any) -> Counts:
    """For a call an agent made and paid for: counts that contradict each other are stored as
    not known (the row is unpriced) rather than refused, so the call itself is not lost."""
    try:
        return normalise(*args)
    except TokenCountError:
        return Counts()
