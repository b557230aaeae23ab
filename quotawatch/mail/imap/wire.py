"""Lean, bounded reading of IMAP responses and exact parsing of those read in bulk (FETCH, LIST, STATUS, QUOTA)."""

from __future__ import annotations

import functools
import imaplib
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from imapclient.datetime_util import parse_to_datetime

from quotawatch.mail.limits import Guard

_CRLF = b"\r\n"
_LITERAL = re.compile(rb"\{(\d+)\}\Z")
_MONTHS = {m: i for i, m in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"), 1
)}  # fmt: skip
_FLAGS_ONLY = re.compile(rb"\d+ \(FLAGS \([^()\"{}]*\)(?: MODSEQ \(\d+\))?\)\Z")
_IDATE = re.compile(rb"( ?\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([-+])(\d\d)(\d\d)")


def command(
    imap: imaplib.IMAP4, line: bytes, want: Sequence[bytes], *, body: int = 0
) -> tuple[str, str, dict[bytes, list[Any]]]:
    """Send one command line and read its whole response with far less per-line work than
    imaplib: returns (OK/NO/BAD, the tagged text, {name: data}) for the untagged responses named
    in ``want``, each data item in imaplib's form (``b"12 (UID 5 ...)"``, or ``(head, literal)``
    followed by the line's rest). Other untagged responses are read and dropped; a BYE or the end
    of the stream raises ``imaplib.IMAP4.abort``. Never used for commands that need ``+``.

    Reads go through the connection's guard (``client.GreetingClient``): lines, literals and the
    answer are capped; ``body`` is the largest message body this command may return."""
    tag: bytes = imap._new_tag()
    try:
        try:
            imap.send(tag + b" " + line + _CRLF)
        except OSError as exc:
            raise imap.abort(f"socket error: {exc}") from None
        guard: Guard | None = getattr(imap, "guard", None)
        if body and guard is not None:
            guard.expect_body(body)
        return _read(imap, tag + b" ", want)
    finally:
        imap.tagged_commands.pop(tag, None)


def pipeline(
    imap: imaplib.IMAP4, lines: Sequence[bytes], want: Sequence[bytes]
) -> tuple[list[tuple[str, str]], dict[bytes, list[Any]]]:
    """Several independent commands in one write (RFC 3501 5.5), read like :func:`command`:
    (OK/NO/BAD, tagged text) per command and the untagged data named in ``want`` of all of
    them together (a server may interleave the answers of commands it runs at once). Each
    command's answer gets its own deadline and caps. Saves a round trip per extra command."""
    tags = [imap._new_tag() for _ in lines]
    try:
        try:
            imap.send(
                b"".join(tag + b" " + line + _CRLF for tag, line in zip(tags, lines, strict=True))
            )
        except OSError as exc:
            raise imap.abort(f"socket error: {exc}") from None
        guard: Guard | None = getattr(imap, "guard", None)
        out: dict[bytes, list[Any]] = {name: [] for name in want}
        done = []
        for k, tag in enumerate(tags):
            if k and guard is not None:
                guard.start_command()  # the next answer's budget starts when this one ends
            typ, text, _ = _read(imap, tag + b" ", want, out)
            done.append((typ, text))
        return done, out
    finally:
        for tag in tags:
            imap.tagged_commands.pop(tag, None)


def _read(
    imap: imaplib.IMAP4,
    tagged: bytes,
    want: Sequence[bytes],
    out: dict[bytes, list[Any]] | None = None,
) -> tuple[str, str, dict[bytes, list[Any]]]:
    readline, read = imap.readline, imap.read
    if out is None:
        out = {name: [] for name in want}
    while True:
        line = readline()
        if not line.endswith(_CRLF):
            raise imap.abort("socket error: EOF" if not line else "unterminated line")
        line = line[:-2]
        if line.startswith(tagged):
            typ, _, text = line[len(tagged) :].partition(b" ")
            return typ.decode("ascii", "replace").upper(), text.decode("utf-8", "replace"), out
        if not line.startswith(b"* "):
            raise imap.abort(f"unexpected response: {line[:80]!r}")
        first, _, rest = line[2:].partition(b" ")
        numbered = first.isdigit()  # "* 12 FETCH (...)": name second, stored as b"12 (...)"
        name, _, tail = rest.partition(b" ") if numbered else (first, b"", rest)
        name = name.upper()
        items = out.get(name)
        if items is None and not line.endswith(b"}"):  # most often: one "* n EXPUNGE" each
            if name == b"BYE":
                raise imap.abort(f"server said BYE: {rest[:200].decode('utf-8', 'replace')}")
            continue
        data = (first + b" " + tail if tail else first) if numbered else rest
        while data.endswith(b"}") and (m := _LITERAL.search(data)) is not None:
            literal = read(int(m.group(1)))
            if items is not None:
                items.append((data, literal))
            data = readline()
            if not data.endswith(_CRLF):
                raise imap.abort("socket error: EOF in a literal's trailer")
            data = data[:-2]
        if items is not None:
            items.append(data)


def response_code(text: str, name: bytes) -> list[bytes]:
    """The data of a tagged answer's response code ``[NAME data]`` (e.g. the CAPABILITY list
    of a login's OK), as a one-item list like an untagged response's; [] without that code."""
    raw = text.encode("utf-8", "replace")
    if raw[:1] != b"[" or not raw[1:].upper().startswith(name + b" "):
        return []
    end = raw.find(b"]")
    return [raw[len(name) + 2 : end]] if end > 0 else []


# ---------------------------------------------------------------------------------- parsing
def internaldate(raw: bytes) -> datetime | None:
    """``"17-Jul-1996 02:44:25 -0700"`` (quotes removed) as an aware UTC datetime; None if invalid."""
    try:
        if (
            len(raw) == 26
            and raw[2] == raw[6] == 0x2D  # "-"
            and raw[11] == raw[20] == 0x20
            and raw[14] == raw[17] == 0x3A  # ":"
            and (raw[0] == 0x20 or 0x30 <= raw[0] <= 0x39)
            and (raw[1:2] + raw[7:11] + raw[12:14] + raw[15:17] + raw[18:20]).isdigit()
            and (month := _MONTHS.get(raw[3:6].lower())) is not None
            and (offset := _offset(raw[21:])) is not None
        ):  # the fixed layout every server sends: slices, no regular expression
            day, year = int(raw[0:2]), int(raw[7:11])
            hh, mm, ss = int(raw[12:14]), int(raw[15:17]), int(raw[18:20])
            return datetime(year, month, day, hh, mm, ss, tzinfo=UTC) - offset
        m = _IDATE.fullmatch(raw)
        if m is not None:
            day_, mon, year_, hh_, mm_, ss_, _sign, _oh, _om = m.groups()
            month_ = _MONTHS.get(mon.lower())
            zone = _offset(raw[-5:])
            if month_ is not None and zone is not None:
                local = datetime(
                    int(year_), month_, int(day_), int(hh_), int(mm_), int(ss_), tzinfo=UTC
                )
                return local - zone
        value: datetime = parse_to_datetime(raw, normalise=False)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


_OFFSETS: dict[bytes, timedelta] = {}


def _offset(zone: bytes) -> timedelta | None:
    """``+0200`` as the timedelta east of UTC (cached: a mailbox has few zones)."""
    found = _OFFSETS.get(zone)
    if found is None:
        if len(zone) != 5 or zone[0] not in b"+-" or not zone[1:].isdigit():
            return None
        if int(zone[1:3]) > 23 or int(zone[3:5]) > 59:
            return None
        found = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        found = _OFFSETS[zone] = found if zone[0] == 0x2B else -found
    return found


@functools.lru_cache(maxsize=32)
def _shape(keys: tuple[bytes, ...]) -> re.Pattern[bytes] | None:
    """The exact line ``N (UID u KEY v ...)`` of a server that answers in the order asked (as
    Dovecot does); a BODY item may only come last, where it may be a literal (and then the
    closing parenthesis follows the literal). Groups: UID, one per key, the closing ")"."""
    parts = [rb"\d+ \(UID (\d+)"]
    for k, key in enumerate(keys):
        if key == b"RFC822.SIZE":
            parts.append(rb" RFC822\.SIZE (\d+)")
        elif key == b"MODSEQ":
            parts.append(rb" MODSEQ (\(\d+\))")
        elif key in (b"INTERNALDATE", b"SAVEDATE"):
            parts.append(b" " + key + rb' ("[^"\\]*"|NIL)')
        elif key.startswith(b"BODY[") and k == len(keys) - 1:
            parts.append(b" " + re.escape(key) + rb' (\{\d+\}|"[^"\\]*"|NIL)')
        else:
            return None
    return re.compile(b"".join(parts) + rb"(\)?)\Z")


def parse_fetch(data: Sequence[Any], items: Sequence[bytes]) -> dict[int, dict[bytes, Any]] | None:
    """FETCH responses that carry exactly the items retention asks for, in the order asked and
    spelled as asked (as Dovecot answers), by UID; INTERNALDATE as an aware UTC datetime.

    None as soon as one response has another shape (other order or case, quoted header field
    names, a literal where a string was expected): the caller then parses
    every response with the complete parser (``fallback.parse_fetch``). Never guesses."""
    keys = tuple(i.replace(b".PEEK", b"") for i in items)
    shape = _shape(keys) if keys else None
    if shape is None:
        return None
    out: dict[int, dict[bytes, Any]] = {}
    parts = iter(data)
    for part in parts:
        head, literal = part if isinstance(part, tuple) else (part, None)
        m = shape.match(head) if isinstance(head, bytes) else None
        if m is None:
            if literal is None and isinstance(head, bytes) and _FLAGS_ONLY.match(head):
                continue  # no UID: another client changed flags (RFC 3501 7.4.2), not ours
            return None
        uid_raw, *values, paren = m.groups()
        if literal is None:
            if values[-1][:1] == b"{" or paren != b")":
                return None
        elif values[-1][:1] != b"{" or paren or next(parts, None) != b")":
            return None  # the line after a literal must close the response, nothing else
        uid = int(uid_raw)
        if uid in out:
            return None  # two answers for one UID: the complete parser merges them
        msg: dict[bytes, Any] = {b"UID": uid}
        for key, value in zip(keys, values, strict=True):
            msg[key] = _value(key, value, literal)
        out[uid] = msg
    return out


def _value(key: bytes, value: bytes, literal: bytes | None) -> Any:
    first = value[0]
    if first == 0x7B:  # "{"
        return literal
    if first == 0x22:  # '"'
        return internaldate(value[1:-1]) if key == b"INTERNALDATE" else value[1:-1]
    if first == 0x28:  # "(": MODSEQ (n)
        return int(value[1:-1])
    return None if value == b"NIL" else int(value)


@functools.lru_cache(maxsize=8)
def _prefix(name: str) -> bytes:
    return name.lower().encode() + b":"


def header_value(raw: Any, name: str) -> str | None:
    """The first ``name:`` field of a HEADER.FIELDS answer, unfolded and with runs of white space
    made single spaces; None when absent or empty."""
    if not isinstance(raw, bytes):
        return None
    prefix = _prefix(name)
    if raw[: len(prefix)].lower() == prefix and b"\n " not in raw and b"\n\t" not in raw:
        end = raw.find(b"\n")  # the common case: the field comes first and is not folded
        lines = raw[len(prefix) : end if end >= 0 else len(raw)].decode("utf-8", "replace")
        value = lines.splitlines()[0] if lines else ""
        return " ".join(value.split()) or None
    text = raw.decode("utf-8", "replace")
    unfolded = re.sub(r"\r?\n[ \t]+", " ", text)
    lowered = name.lower() + ":"
    for line in unfolded.splitlines():
        if line.lower().startswith(lowered):
            return " ".join(line[len(lowered) :].split()) or None
    return None


# ---------------------------------------------------------------------------------- LIST, STATUS, QUOTA
_QUOTED = rb'"(?:[^"\\]|\\.)*"'
_ASTRING = rb"(" + _QUOTED + rb'|[^\s()"{}\\]+)'
_LIST = re.compile(rb"\(([^()]*)\) (NIL|" + _QUOTED + rb") " + _ASTRING + rb"\Z")
_PAREN = re.compile(_ASTRING + rb" \(([^()]*)\)\Z")
_UNESCAPE = re.compile(rb"\\(.)")


def unquote(raw: bytes) -> bytes:
    """An atom as it is, a quoted string without quotes and escapes."""
    return _UNESCAPE.sub(rb"\1", raw[1:-1]) if raw[:1] == b'"' else raw


def parse_list(data: Sequence[Any]) -> list[tuple[list[bytes], bytes]] | None:
    """(flags, raw mailbox name) of ``* LIST`` responses; None when any is unusual (a literal,
    extended data), so that the caller falls back to imapclient's parser."""
    out = []
    for part in data:
        m = _LIST.match(part) if isinstance(part, bytes) else None
        if m is None:
            return None
        out.append((m.group(1).split(), unquote(m.group(3))))
    return out


def _paren(data: Sequence[Any], width: int) -> list[tuple[bytes, list[bytes]]] | None:
    """``name (WORD n ... )`` lines, ``width`` words per group with numbers after the first."""
    out = []
    for part in data:
        m = _PAREN.match(part) if isinstance(part, bytes) else None
        if m is None:
            return None
        words = m.group(2).split()
        if len(words) % width or not all(w.isdigit() for k, w in enumerate(words) if k % width):
            return None
        out.append((unquote(m.group(1)), words))
    return out


def parse_status(data: Sequence[Any]) -> list[tuple[bytes, dict[bytes, int]]] | None:
    """(raw mailbox name, {ITEM: number}) of ``* STATUS`` responses; None when unusual."""
    parsed = _paren(data, 2)
    if parsed is None:
        return None
    return [
        (name, {w[k].upper(): int(w[k + 1]) for k in range(0, len(w), 2)}) for name, w in parsed
    ]


def parse_quota(data: Sequence[Any]) -> list[tuple[bytes, list[tuple[str, int, int]]]] | None:
    """(raw root name, [(RESOURCE, usage, limit)]) of ``* QUOTA`` responses; None when unusual."""
    parsed = _paren(data, 3)
    if parsed is None:
        return None
    return [
        (root, [(w[k].decode("ascii", "replace").upper(), int(w[k + 1]), int(w[k + 2]))
                for k in range(0, len(w), 3)])
        for root, w in parsed
    ]  # fmt: skip
