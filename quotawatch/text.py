"""Plain-text output shared by the CLI and the mails: aligned tables and one-line printable text."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence


def clean(text: str) -> str:
    """One line of printable text: control characters (CR, LF, TAB, ...) become single spaces."""
    return " ".join(
        "".join(" " if ord(c) < 32 or 0x7F <= ord(c) < 0xA0 else c for c in text).split()
    )


_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\0": "\\0"}
#: control characters and line/paragraph separators
_UNSAFE = ("Cc", "Zl", "Zp")


def escape(text: str) -> str:
    """``text`` on one line with every control character visible (``\\r``, ``\\n``, ``\\x1b``),
    for names that come from a server: nothing it sends can break a line or drive a terminal."""
    if text.isprintable():
        return text
    return "".join(
        _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if unicodedata.category(c) in _UNSAFE
        else c
        for c in text
    )


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    right: Iterable[int] = (),
    indent: str = "",
) -> str:
    """An aligned plain-text table; columns in ``right`` are right-aligned."""
    rows = [list(map(str, r)) for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    right_set = set(right)

    def fmt(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right_set else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return (indent + "  ".join(out)).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, rows)])
