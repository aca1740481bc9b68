"""Roman numerals."""

_VALUES = [("M", 1000), ("D", 500), ("C", 100), ("L", 50), ("X", 10), ("V", 5), ("I", 1)]


def to_roman(n):
    out = []
    for symbol, value in _VALUES:
        while n >= value:
            out.append(symbol)
            n -= value
    return "".join(out)


def from_roman(s):
    lookup = dict(_VALUES)
    return sum(lookup[ch] for ch in s)
