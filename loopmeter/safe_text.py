"""Text that came from a sandbox, made safe to print: every face that shows an audit target uses `printable`.

A target is whatever a sandboxed process chose to send (a CONNECT host, an argv): raw, a control byte
can move the cursor, clear the screen or print a line that looks like loopmeter's own. `printable`
writes each such character as a visible escape (`\\x1b`, `\\u202e`) and can cut the text to a length.
"""

from __future__ import annotations

import re

# C0 controls (newline and tab included), DEL, C1 controls (0x9b is a one-byte CSI on some
# terminals), the bidi marks, embeddings, overrides and isolates that reorder what follows them
# ("Trojan Source"), the line and paragraph separators, the BOM, and lone surrogates (which a
# terminal cannot even be sent).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str | None, limit: int | None = None) -> str:
    """`text` with control and reordering characters written as `\\xNN` / `\\uNNNN`; cut to about
    `limit` characters (the cut says how many were left out). None gives ""."""
    if not text:
        return ""
    out = _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text
    if limit is not None and len(out) > limit:
        out = f"{out[:limit]}...(+{len(out) - limit} chars)"
    return out


def has_unsafe(text: str) -> bool:
    """Whether `printable` would change anything but the length."""
    return _UNSAFE.search(text) is not None
