"""imapclient's complete parser applied to one response at a time, where wire's fast parsers step aside."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from imapclient.response_parser import parse_fetch_response, parse_response

from quotawatch.errors import ProtocolError

_QUOTED_NAME = re.compile(rb'"((?:[^"\\]|\\.)*)"')
#: what a FETCH response may carry without a UID: another client's flag change (RFC 3501 7.4.2,
#: RFC 7162 3.2.4); ``SEQ`` is imapclient's key for the message sequence number
_UNSOLICITED = frozenset({b"FLAGS", b"MODSEQ", b"SEQ"})


def responses(data: Sequence[Any]) -> Iterator[list[Any]]:
    """The untagged data of one kind (as ``wire.command`` or imaplib collect it) cut into
    responses: each is its ``(text, literal)`` pairs followed by the bytes that end its line."""
    current: list[Any] = []
    for part in data:
        if part is None:
            continue
        current.append(part)
        if not isinstance(part, tuple):
            if current != [b""]:
                yield current
            current = []
    if current:
        yield current


def fetch_key(raw: bytes) -> bytes:
    """A FETCH item name as quotawatch asks for it: upper case, ``.PEEK`` dropped, header field
    names unquoted (``BODY[HEADER.FIELDS ("Message-ID")]`` -> ``BODY[HEADER.FIELDS (MESSAGE-ID)]``)."""
    key = raw.upper().replace(b".PEEK", b"")
    if b"[" in key:
        key = b" ".join(_QUOTED_NAME.sub(rb"\1", key).split())
    return key


def parse_fetch(
    account: str, data: Sequence[Any], items: Sequence[bytes], asked: Collection[int]
) -> dict[int, dict[bytes, Any]]:
    """The items asked for, by UID, of the UIDs ``asked``; INTERNALDATE as aware UTC.

    Each response is parsed on its own and filed under the UID it carries; the data of several
    responses for one UID are merged (RFC 3501 7.4.2). A response without UID that carries only
    FLAGS (and MODSEQ) is unsolicited (another client changed flags) and skipped; one that
    carries anything else is an answer that cannot be placed and raises ProtocolError, as does
    a UID that was asked for and answered without one of the items: never taken as absent.
    """
    keys = {fetch_key(i) for i in items}
    merged: dict[int, dict[bytes, Any]] = {}
    for response in responses(data):
        for values in parse_fetch_response(
            response, normalise_times=False, uid_is_key=False
        ).values():
            found = {fetch_key(k): v for k, v in values.items()}
            uid = found.get(b"UID")
            if uid is None:
                data = sorted(k.decode("ascii", "replace") for k in found.keys() - _UNSOLICITED)
                if not data:
                    continue
                raise ProtocolError(
                    account,
                    f"the server's FETCH answer carries {', '.join(data)} without a UID"[:300],
                )
            if not isinstance(uid, int):
                raise ProtocolError(account, f"FETCH response with UID {str(uid)[:40]}")
            merged.setdefault(uid, {}).update(found)
    out: dict[int, dict[bytes, Any]] = {}
    wanted = set(asked)
    for uid, found in merged.items():
        if uid not in wanted:
            continue
        missing = keys - found.keys()
        if missing:
            names = ", ".join(sorted(m.decode("ascii", "replace") for m in missing))
            raise ProtocolError(account, f"the server's FETCH for UID {uid} lacks {names}"[:300])
        msg = {key: found[key] for key in keys}
        msg[b"UID"] = uid
        if isinstance(msg.get(b"INTERNALDATE"), datetime):
            msg[b"INTERNALDATE"] = _aware(msg[b"INTERNALDATE"])
        out[uid] = msg
    return out


def parse_list(account: str, data: Sequence[Any]) -> list[tuple[list[Any], Any]]:
    """(flags, raw mailbox name) of each LIST response, whatever extended items follow the name."""
    out = []
    for response in responses(data):
        parsed = parse_response(response)
        if len(parsed) < 3 or not isinstance(parsed[0], tuple):
            raise ProtocolError(account, f"unexpected LIST response: {str(response)[:200]}")
        out.append((list(parsed[0]), parsed[2]))
    return out


def parse_pairs(account: str, name: str, data: Sequence[Any]) -> list[tuple[Any, tuple[Any, ...]]]:
    """(mailbox or root, parenthesised list) of each STATUS or QUOTA response."""
    out = []
    for response in responses(data):
        parsed = parse_response(response)
        if len(parsed) != 2 or not isinstance(parsed[1], tuple):
            raise ProtocolError(account, f"unexpected {name} response: {str(response)[:200]}")
        out.append((parsed[0], parsed[1]))
    return out


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
