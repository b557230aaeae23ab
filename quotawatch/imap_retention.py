"""IMAP retention operations: server-side candidate search, metadata fetches, UID-exact delete and move."""

from __future__ import annotations

import contextlib
import email.utils
import imaplib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from imapclient.response_parser import parse_fetch_response

from quotawatch import imap_wire
from quotawatch.errors import CapabilityMissing, ConnectError, ProtocolError, SafetyStop
from quotawatch.imap import chunks, translate_errors, uid_ranges
from quotawatch.mailbox import Candidate, FolderSelection, MessageMeta, SearchQuery

if TYPE_CHECKING:
    from quotawatch.imap import ImapSession

DELETED = b"\\Deleted"
_HEADER_DATE = b"BODY.PEEK[HEADER.FIELDS (DATE)]"
_HEADER_MSGID = b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
#: search key and FETCH item per age kind, used when the server can apply the age
_AGE_KEYS = {
    "saved": ("SAVEDBEFORE", b"SAVEDATE"),
    "received": ("BEFORE", b"INTERNALDATE"),
    "sent": ("SENTBEFORE", _HEADER_DATE),
}
#: responses the server sends during our commands that nobody reads; dropped so they never pile up
_NOISE = ("EXPUNGE", "EXISTS", "RECENT", "FETCH", "VANISHED")


# ---------------------------------------------------------------------------------- low level
@contextlib.contextmanager
def _errors(s: ImapSession, doing: str) -> Iterator[None]:
    """translate_errors, plus: a server BYE (imaplib's abort) is a lost connection, not a refusal."""
    with translate_errors(s.account, doing):
        try:
            yield
        except imaplib.IMAP4.abort as exc:
            raise ConnectError(s.account, f"connection lost ({doing}): {exc}") from None


def _select(s: ImapSession, folder: str, *, readonly: bool) -> tuple[int, int]:
    """A fresh SELECT (or EXAMINE); never CLOSE. Returns (UIDVALIDITY, EXISTS)."""
    info = s.client.select_folder(folder, readonly=readonly)
    s._selected, s._selected_readonly = folder, readonly
    s._uidvalidity = int(info[b"UIDVALIDITY"])
    return s._uidvalidity, int(info.get(b"EXISTS", 0))


def _check(
    s: ImapSession, folder: str, expected: int | None, *, readonly: bool, fresh: bool = False
) -> None:
    """Select ``folder`` (re-using a fitting selection unless ``fresh``) and insist on the planned
    UIDVALIDITY. A selection cannot change UIDVALIDITY while it lasts (the server ends it first),
    so only a fresh SELECT needs a new look; SELECT costs time proportional to the folder."""
    reuse = not fresh and s._selected == folder and (readonly or not s._selected_readonly)
    actual = s._uidvalidity if reuse else _select(s, folder, readonly=readonly)[0]
    if expected is not None and actual != expected:
        raise SafetyStop(
            s.account,
            f"UIDVALIDITY of {folder} changed from {expected} to {actual} since the plan; "
            f"nothing changed in {folder}",
        )


def _drop_noise(s: ImapSession) -> None:
    for name in _NOISE:
        s.client._imap.untagged_responses.pop(name, None)


def _run(s: ImapSession, name: str, line: bytes, want: bytes = b"") -> list[Any]:
    """One command through the lean reader (imap_wire); the untagged ``want`` data; NO/BAD raise."""
    typ, text, got = imap_wire.command(s.client._imap, line, (want,) if want else ())
    if typ != "OK":
        s.client._checkok(name, typ, [text])
    return got.get(want, [])


def _search(s: ImapSession, criteria: list[Any]) -> list[int]:
    found = sorted(int(u) for u in s.client.search(criteria))
    _drop_noise(s)
    return found


def _search_uids(s: ImapSession, uid_set: str) -> list[int]:
    """``UID SEARCH UID <set>``: which of these UIDs exist now, sorted."""
    data = _run(s, "search", b"UID SEARCH UID " + uid_set.encode(), b"SEARCH")
    uids = imap_wire.parse_search(data)
    if uids is None:
        raise ProtocolError(s.account, f"unexpected SEARCH response: {str(data)[:200]}")
    return uids


def _fetch(
    s: ImapSession, uids: Iterable[int], items: Sequence[bytes]
) -> dict[int, dict[bytes, Any]]:
    """One chunked ``UID FETCH <ranges> (items)``; INTERNALDATE comes back as aware UTC."""
    wanted = sorted(set(uids))
    spec = b" (" + b" ".join(items) + b")"
    keys = {i.replace(b".PEEK", b"") for i in items}
    result: dict[int, dict[bytes, Any]] = {}
    for part in chunks(wanted):
        data = _run(s, "fetch", b"UID FETCH " + uid_ranges(part).encode() + spec, b"FETCH")
        parsed = imap_wire.parse_fetch(data, items)
        if parsed is None:  # anything unexpected: imapclient's complete (and slower) parser
            slow = parse_fetch_response(data, normalise_times=False, uid_is_key=True)
            # an entry without every item is an unsolicited FETCH keyed by sequence number
            parsed = {int(u): dict(v) for u, v in slow.items() if keys <= v.keys()}
            for v in parsed.values():
                if b"INTERNALDATE" in v:
                    v[b"INTERNALDATE"] = _aware(v[b"INTERNALDATE"])
        part_set = set(part)
        result.update({u: v for u, v in parsed.items() if u in part_set})
    return result


#: kept for tests and callers of the old names
_parse_fast = imap_wire.parse_fetch
_header = imap_wire.header_value


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _age_date(age: str, item: dict[bytes, Any]) -> datetime | None:
    """The date a message's age is measured from, or None when the server gave no usable one."""
    try:
        if age == "received":
            return _aware(item.get(b"INTERNALDATE"))
        if age == "saved":
            raw = item.get(b"SAVEDATE")
            return imap_wire.internaldate(raw) if isinstance(raw, bytes) else None
        text = _header(item.get(b"BODY[HEADER.FIELDS (DATE)]"), "Date")
        return _aware(email.utils.parsedate_to_datetime(text)) if text else None
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


# ---------------------------------------------------------------------------------- operations
def select_candidates(s: ImapSession, folder: str, query: SearchQuery) -> FolderSelection:
    """One UID SEARCH with every criterion the server can apply, then one chunked UID FETCH of
    size and date for the matches only.

    Day-granular date keys (SAVEDBEFORE, BEFORE, SENTBEFORE ignore time and time zone) are sent
    two days late, so they select a superset; each match is then confirmed against the exact
    fetched date. This is exact whatever the server's clock or time zone. Without SAVEDATE,
    ``age: saved`` is left to the caller's first-seen records (``age_applied=False``).
    """
    with _errors(s, f"search {folder}"):
        uidvalidity, exists = _select(s, folder, readonly=True)
        if exists == 0:
            return FolderSelection(folder, uidvalidity, 0, ())
        server_age = query.before is not None and (
            query.age != "saved" or "SAVEDATE" in s.capabilities()
        )
        criteria: list[Any] = []
        items = [b"RFC822.SIZE", b"INTERNALDATE"]
        if query.before is not None and server_age:
            key, item = _AGE_KEYS[query.age]
            criteria += [key, (query.before.astimezone(UTC) + timedelta(days=2)).date()]
            if item not in items:
                items.append(item)
        if query.larger_than is not None:
            criteria += ["LARGER", int(query.larger_than)]
        if query.exclude_flagged:
            criteria.append("UNFLAGGED")
        if query.exclude_unseen:
            criteria.append("SEEN")
        uids = _search(s, criteria or ["ALL"])
        fetched = _fetch(s, uids, items)
        candidates = []
        for uid in uids:
            got = fetched.get(uid)
            if got is None:  # expunged by someone else since the search
                continue
            date = _age_date(query.age if server_age else "received", got)
            if date is None or (server_age and query.before is not None and date >= query.before):
                continue
            candidates.append(Candidate(uid, int(got[b"RFC822.SIZE"]), date))
        all_uids: tuple[int, ...] = ()
        if not server_age and query.before is not None:
            all_uids = tuple(_search(s, ["ALL"]))
        return FolderSelection(
            folder,
            uidvalidity,
            exists,
            tuple(candidates),
            age_applied=server_age or query.before is None,
            all_uids=all_uids,
        )


def message_meta(
    s: ImapSession, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
) -> dict[int | str, MessageMeta]:
    """Size, Message-ID and INTERNALDATE of those UIDs that still exist (one chunked UID FETCH)."""
    with _errors(s, f"fetch metadata in {folder}"):
        _check(s, folder, uidvalidity, readonly=True)
        fetched = _fetch(
            s, (int(u) for u in uids), [b"RFC822.SIZE", b"INTERNALDATE", _HEADER_MSGID]
        )
    return {
        uid: MessageMeta(
            uid,
            int(item[b"RFC822.SIZE"]),
            _header(item.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]"), "Message-ID"),
            _aware(item.get(b"INTERNALDATE")),
        )
        for uid, item in fetched.items()
    }


def fetch_message(s: ImapSession, folder: str, uidvalidity: int | None, uid: int | str) -> bytes:
    """The full message (``BODY.PEEK[]``, so \\Seen is not set)."""
    with _errors(s, f"fetch UID {uid} in {folder}"):
        _check(s, folder, uidvalidity, readonly=True)
        item = _fetch(s, [int(uid)], [b"BODY.PEEK[]"]).get(int(uid))
    body = item.get(b"BODY[]") if item else None
    if not isinstance(body, bytes):
        raise ProtocolError(s.account, f"UID {uid} is no longer in {folder}")
    return body


def _remove(
    s: ImapSession, folder: str, uidvalidity: int | None, uids: Sequence[int | str], act: Any
) -> int:
    """Shared loop of delete and move: per chunk, act on the UIDs that exist, count what left."""
    _check(s, folder, uidvalidity, readonly=False, fresh=not uids)  # the probe selects afresh
    removed = 0
    for part in chunks(sorted({int(u) for u in uids})):
        existing = _search_uids(s, uid_ranges(part))
        if not existing:
            continue
        uid_set = uid_ranges(existing)
        act(uid_set)
        survivors = _search_uids(s, uid_set)
        removed += len(existing) - len(survivors)
        _drop_noise(s)
    return removed


def delete(s: ImapSession, folder: str, uidvalidity: int | None, uids: Sequence[int | str]) -> int:
    """``UID STORE +FLAGS.SILENT (\\Deleted)`` then ``UID EXPUNGE`` of the same explicit set.

    Never a bare EXPUNGE or CLOSE, which would also remove what other clients marked \\Deleted.
    With no UIDs this only checks the capability and UIDVALIDITY (the executor's probe).
    """
    if "UIDPLUS" not in s.capabilities():
        raise CapabilityMissing(
            s.account, "UIDPLUS", "UID EXPUNGE; without it quotawatch refuses to delete"
        )

    def act(uid_set: str) -> None:
        _run(s, "store", b"UID STORE " + uid_set.encode() + b" +FLAGS.SILENT (" + DELETED + b")")
        _run(s, "expunge", b"UID EXPUNGE " + uid_set.encode())

    with _errors(s, f"delete in {folder}"):
        return _remove(s, folder, uidvalidity, uids, act)


def move(
    s: ImapSession, folder: str, uidvalidity: int | None, uids: Sequence[int | str], target: str
) -> int:
    """``UID MOVE`` when offered, else ``UID COPY`` + the delete sequence above."""
    caps = s.capabilities()
    if "MOVE" not in caps and "UIDPLUS" not in caps:
        raise CapabilityMissing(s.account, "MOVE or UIDPLUS", f"moving messages to {target}")
    if target == folder:
        raise SafetyStop(s.account, f"cannot move messages from {folder} to itself")

    def act(uid_set: str) -> None:
        if "MOVE" in caps:
            s.client.move(uid_set, target)
        else:
            s.client.copy(uid_set, target)
            s.client.add_flags(uid_set, [DELETED], silent=True)
            s.client.uid_expunge(uid_set)

    with _errors(s, f"move from {folder} to {target}"):
        return _remove(s, folder, uidvalidity, uids, act)
