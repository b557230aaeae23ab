"""Exact parsing of SEARCH and ESEARCH answers, UID sets and ``[MODIFIED]`` response codes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from quotawatch.mail.imap.wire import unquote


def parse_search(data: Sequence[Any]) -> list[int] | None:
    """The UIDs of ``* SEARCH`` responses, sorted; None when any token is not a number."""
    uids: list[int] = []
    for part in data:
        if not isinstance(part, bytes):
            return None
        for token in part.split():
            if not token.isdigit():
                return None
            uids.append(int(token))
    uids.sort()
    return uids


def parse_uid_set(text: bytes) -> list[int] | None:
    """``1:3,7,9:8`` as the sorted UIDs it names (a range may run either way); None if malformed."""
    out: list[int] = []
    for part in text.split(b","):
        low, colon, high = part.partition(b":")
        if not low.isdigit() or (colon and not high.isdigit()):
            return None
        a, b = int(low), int(high) if colon else int(low)
        out.extend(range(min(a, b), max(a, b) + 1))
    out.sort()
    return out


_CORRELATOR = re.compile(rb'\(TAG ("(?:[^"\\]|\\.)*"|[^\s()"]+)\)', re.I)


def parse_esearch(data: Sequence[Any], tag: bytes | None = None) -> list[int] | None:
    """The UIDs of ``* ESEARCH (TAG "t") UID ALL 1:5000,5002`` responses (RFC 4731) to a
    ``UID SEARCH RETURN (ALL)``, sorted; without ALL none matched. A response correlated with
    another tag than ``tag`` is skipped; None when any response is not of that form (no ``UID``,
    an odd item list, an item other than ALL, MIN, MAX, COUNT, MODSEQ, or a bad set)."""
    uids: list[int] = []
    for part in data:
        if not isinstance(part, bytes):
            return None
        rest = part.strip()
        m = _CORRELATOR.match(rest)
        if m is not None:
            if tag is not None and unquote(m.group(1)) != tag:
                continue
            rest = rest[m.end() :]
        words = rest.split()
        if not words or words[0].upper() != b"UID" or len(words) % 2 == 0:
            return None
        for name, value in zip(words[1::2], words[2::2], strict=True):
            name = name.upper()
            if name == b"ALL":
                found = parse_uid_set(value)
                if found is None:
                    return None
                uids.extend(found)
            elif name not in (b"MIN", b"MAX", b"COUNT", b"MODSEQ") or not value.isdigit():
                return None
    uids.sort()
    return uids


_MODIFIED = re.compile(rb"\[MODIFIED ([0-9:,]+)\]", re.I)


def modified_uids(text: str) -> list[int] | None:
    """The UIDs of a ``[MODIFIED 7,9:11]`` response code (RFC 7162) in a tagged text; None if
    there is none (every message was stored)."""
    m = _MODIFIED.search(text.encode("utf-8", "replace"))
    return parse_uid_set(m.group(1)) if m else None


def parse_vanished(data: Any) -> list[int] | None:
    """The UIDs of a ``* VANISHED [(EARLIER)] <set>`` response (RFC 7162); None if malformed."""
    if not isinstance(data, bytes):
        return None
    words = data.split()
    if len(words) == 2 and words[0].upper() == b"(EARLIER)":
        words = words[1:]
    return parse_uid_set(words[0]) if len(words) == 1 else None
