"""IMAP syntax quotawatch writes: quoted modified-UTF-7 mailbox names, UID sets, command-sized chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from imapclient.imap_utf7 import encode as encode_utf7

#: UIDs per UID FETCH / STORE / EXPUNGE command, to keep command lines well under server limits
UID_CHUNK = 2000


def quote_mailbox(name: str) -> bytes:
    """A mailbox name as an IMAP quoted string, modified-UTF-7 encoded."""
    encoded: bytes = encode_utf7(name)
    return b'"' + encoded.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def uid_ranges(uids: Sequence[int]) -> str:
    """``1:3,7,9:10`` for [1, 2, 3, 7, 9, 10]."""
    ordered = sorted(set(uids))
    if not ordered:
        return ""
    out: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid != prev + 1:
            out.append(str(start) if start == prev else f"{start}:{prev}")
            start = uid
        prev = uid
    out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


def chunks(items: Sequence[Any], size: int = UID_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
