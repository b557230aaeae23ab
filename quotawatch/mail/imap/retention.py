"""IMAP retention reads: server-side candidate search (ESEARCH, WITHIN, CONDSTORE), metadata and body fetches, the clock probe."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from quotawatch.errors import ProtocolError, SafetyStop
from quotawatch.mail.imap import fallback, searches
from quotawatch.mail.imap import wire as imap_wire
from quotawatch.mail.imap.errors import translate_errors
from quotawatch.mail.imap.removal import RemovalOps, modseq_of
from quotawatch.mail.imap.syntax import chunks, uid_ranges
from quotawatch.mail.limits import body_allowance
from quotawatch.mail.session import (
    Candidate,
    ClockProbe,
    FolderSelection,
    MessageMeta,
    SearchQuery,
)

_HEADER_DATE = b"BODY.PEEK[HEADER.FIELDS (DATE)]"
_HEADER_MSGID = b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
#: search key and FETCH item per age kind, used when the server can apply the age
_AGE_KEYS = {
    "saved": (b"SAVEDBEFORE", b"SAVEDATE"),
    "received": (b"BEFORE", b"INTERNALDATE"),
    "sent": (b"SENTBEFORE", _HEADER_DATE),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: responses the server sends during our commands that nobody reads; dropped so they never pile up
_NOISE = ("EXPUNGE", "EXISTS", "RECENT", "FETCH", "VANISHED")
#: messages per UID SEARCH in a big folder: even a plain SEARCH answer for this many UIDs of ten
#: digits stays under 1 MB, far below the reader's line cap (ESEARCH answers are mostly far shorter)
SEARCH_WINDOW = 65_536


def _imap_date(day: date) -> bytes:
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}".encode()


class RetentionOps(RemovalOps):
    """The retention half of ImapSession (its base class): what it needs of the session is
    declared here; it never sends a bare EXPUNGE or CLOSE."""

    account: str
    client: Any
    _selected: str | None
    _selected_readonly: bool
    _uidvalidity: int | None
    #: whether ENABLE was sent; HIGHESTMODSEQ of the last SELECT (None: not kept)
    _condstore_asked = False
    _highestmodseq: int | None = None
    #: QRESYNC is on: the server names expunged messages by UID (VANISHED), collected in
    #: ``_vanished`` for the current selection; None once an answer could not be read
    _qresync = False
    _vanished: set[int] | None = None

    def capabilities(self) -> frozenset[str]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ low level
    def _select(self, folder: str, *, readonly: bool, fresh: bool = True) -> tuple[int, int]:
        """SELECT (or EXAMINE) a folder, never CLOSE; without ``fresh`` a fitting current selection
        is reused. Returns (UIDVALIDITY, EXISTS); EXISTS is -1 for a reused selection."""
        if not fresh and self._selected == folder and (readonly or not self._selected_readonly):
            assert self._uidvalidity is not None
            return self._uidvalidity, -1
        caps = self.capabilities()
        if not self._condstore_asked and {"CONDSTORE", "ENABLE"} <= caps:
            self._condstore_asked = True  # from now on SELECT reports HIGHESTMODSEQ
            if "QRESYNC" in caps:  # implies CONDSTORE; expunges are then reported by UID
                got = self._run("enable", b"ENABLE QRESYNC", b"ENABLED")
                self._qresync = b"QRESYNC" in b" ".join(got[b"ENABLED"]).upper().split()
            else:
                self._run("enable", b"ENABLE CONDSTORE", b"ENABLED")
        info = self.client.select_folder(folder, readonly=readonly)
        self._selected, self._selected_readonly = folder, readonly
        self._vanished = set() if self._qresync else None
        self._uidvalidity = int(info[b"UIDVALIDITY"])
        highest = info.get(b"HIGHESTMODSEQ") if "CONDSTORE" in caps else None
        self._highestmodseq = int(highest) if highest is not None else None
        return self._uidvalidity, int(info.get(b"EXISTS", 0))

    def _check(
        self, folder: str, expected: int | None, *, readonly: bool, fresh: bool = False
    ) -> None:
        """Select ``folder`` (re-using a fitting selection unless ``fresh``) and insist on the planned
        UIDVALIDITY. A selection cannot change UIDVALIDITY while it lasts (the server ends it first),
        so only a fresh SELECT needs a new look; SELECT costs time proportional to the folder."""
        actual = self._select(folder, readonly=readonly, fresh=fresh)[0]
        if expected is not None and actual != expected:
            raise SafetyStop(
                self.account,
                f"UIDVALIDITY of {folder} changed from {expected} to {actual} since the plan; "
                f"nothing changed in {folder}",
            )

    def _drop_noise(self) -> None:
        for name in _NOISE:
            self.client._imap.untagged_responses.pop(name, None)

    def _run(self, name: str, line: bytes, *want: bytes, body: int = 0) -> dict[bytes, list[Any]]:
        """One command line (arguments pre-quoted) through the lean reader; the untagged data
        named in ``want``; NO/BAD raise. ``body``: the largest message body it may return."""
        return self._command(name, line, *want, body=body)[1]

    def _command(
        self, name: str, line: bytes, *want: bytes, body: int = 0
    ) -> tuple[str, dict[bytes, list[Any]]]:
        """:meth:`_run` that also returns the tagged text; with QRESYNC it files the UIDs of
        every VANISHED answer under the current selection."""
        vanished = self._vanished is not None
        typ, text, got = imap_wire.command(
            self.client._imap, line, (*want, b"VANISHED") if vanished else want, body=body
        )
        if vanished:
            for data in got.pop(b"VANISHED"):
                uids = searches.parse_vanished(data)
                if uids is None or self._vanished is None:
                    self._vanished = None  # cannot be read: searches tell what is left
                    break
                self._vanished.update(uids)
        if typ != "OK":
            self.client._checkok(name, typ, [text])
        return text, got

    def _gone(self, uids: Sequence[int]) -> set[int] | None:
        """Those of ``uids`` the server reported expunged (VANISHED) since the folder was
        selected; None when it does not report them by UID (no QRESYNC) or one answer could not
        be read. A session's view of a folder loses a message only by reporting it, so this
        is what ``UID SEARCH UID <set>`` would find missing, without asking."""
        if self._vanished is None:
            return None
        return {u for u in uids if u in self._vanished}

    def _search_line(self, keys: bytes) -> list[int]:
        """One ``UID SEARCH <keys>``, answered as ESEARCH ``RETURN (ALL)`` ranges where offered."""
        if "ESEARCH" in self.capabilities():
            got = self._run("search", b"UID SEARCH RETURN (ALL) " + keys, b"ESEARCH")
            uids = searches.parse_esearch(got[b"ESEARCH"])
            data = got[b"ESEARCH"]
        else:
            data = self._run("search", b"UID SEARCH " + keys, b"SEARCH")[b"SEARCH"]
            uids = searches.parse_search(data)
        if uids is None:
            raise ProtocolError(self.account, f"unexpected SEARCH response: {str(data)[:200]}")
        return uids

    def _search(self, keys: bytes, exists: int) -> list[int]:
        """The UIDs of the selected folder matching ``keys``, sorted; a folder of more than
        SEARCH_WINDOW messages is searched in windows of message numbers, so that no answer line
        nears the reader's line cap whatever the UIDs look like. A message expunged meanwhile may
        shift one out of a window: then it is simply no candidate this time."""
        if exists <= SEARCH_WINDOW:
            return self._search_line(keys)
        found: set[int] = set()
        for low in range(1, exists + 1, SEARCH_WINDOW):
            high = b"*" if low + SEARCH_WINDOW > exists else b"%d" % (low + SEARCH_WINDOW - 1)
            found.update(self._search_line(b"%d:" % low + high + b" " + keys))
        return sorted(found)

    def _search_uids(self, uid_set: str, keys: bytes = b"") -> list[int]:
        """``UID SEARCH UID <set> [keys]``: which of these UIDs exist now (and match), sorted."""
        return self._search_line(b"UID " + uid_set.encode() + (b" " + keys if keys else b""))

    def _fetch(self, uids: Iterable[int], items: Sequence[bytes]) -> dict[int, dict[bytes, Any]]:
        """One chunked ``UID FETCH <ranges> (items)``; INTERNALDATE comes back as aware UTC.

        A message body (``BODY.PEEK[]``) may be only as large as the messages' RFC822.SIZE
        (asked for first) plus slack; any other literal is small (see ``mail.limits``)."""
        wanted = sorted(set(uids))
        spec = b" (" + b" ".join(items) + b")"
        with_body = any(i.replace(b".PEEK", b"") == b"BODY[]" for i in items)
        result: dict[int, dict[bytes, Any]] = {}
        for part in chunks(wanted):
            body = 0
            if with_body:
                sizes = self._fetch(part, [b"RFC822.SIZE"])
                body = body_allowance(sum(int(v[b"RFC822.SIZE"]) for v in sizes.values()))
            line = b"UID FETCH " + uid_ranges(part).encode() + spec
            data = self._run("fetch", line, b"FETCH", body=body)[b"FETCH"]
            parsed = imap_wire.parse_fetch(data, items)
            if parsed is None:  # anything unexpected: each response through the complete parser
                parsed = fallback.parse_fetch(self.account, data, items, part)
            part_set = set(part)
            result.update({u: v for u, v in parsed.items() if u in part_set})
        return result

    def select_candidates(self, folder: str, query: SearchQuery) -> FolderSelection:
        """One UID SEARCH with every criterion the server can apply, then one chunked UID FETCH of
        size and date (and MODSEQ, with CONDSTORE) for the matches only.

        Day-granular date keys (SAVEDBEFORE, BEFORE, SENTBEFORE ignore time and time zone) are sent
        two days late, so they select a superset; each match is then confirmed against the exact
        fetched date. This is exact whatever the server's clock or time zone. Where WITHIN is
        offered, ``OLDER`` asks the server's own clock too. Without SAVEDATE, ``age: saved`` is left
        to the caller's first-seen records (``age_applied=False``). A candidate whose mod-sequence
        is above the HIGHESTMODSEQ read before the search changed during planning: it is left for
        the next run, so that every planned mod-sequence predates any later change (see removal).
        """
        with translate_errors(self.account, f"search {folder}"):
            uidvalidity, exists = self._select(folder, readonly=True)
            if exists == 0:
                return FolderSelection(folder, uidvalidity, 0, ())
            highest = self._highestmodseq
            caps = self.capabilities()
            server_age = query.before is not None and (query.age != "saved" or "SAVEDATE" in caps)
            keys: list[bytes] = []
            items = [b"RFC822.SIZE", b"INTERNALDATE"]
            if highest is not None:
                items.append(b"MODSEQ")
            if query.before is not None and server_age:
                key, item = _AGE_KEYS[query.age]
                keys += [key, _imap_date((query.before.astimezone(UTC) + timedelta(days=2)).date())]
                if item not in items:
                    items.append(item)
            if query.older and "WITHIN" in caps:
                keys += [b"OLDER", b"%d" % max(1, int(query.older.total_seconds()))]
            audit = query.audit and not any(i.startswith(b"BODY") for i in items)
            if audit:  # the fast parser reads one header item, last
                items.append(_HEADER_MSGID)
            if query.larger_than is not None:
                keys += [b"LARGER", b"%d" % int(query.larger_than)]
            if query.exclude_flagged:
                keys.append(b"UNFLAGGED")
            if query.exclude_unseen:
                keys.append(b"SEEN")
            uids = self._search(b" ".join(keys) or b"ALL", exists)
            fetched = self._fetch(uids, items)
            candidates = []
            for uid in uids:
                got = fetched.get(uid)
                if got is None:  # expunged by someone else since the search
                    continue
                date = _age_date(query.age if server_age else "received", got)
                if date is None or (
                    server_age and query.before is not None and date >= query.before
                ):
                    continue
                modseq = modseq_of(got.get(b"MODSEQ")) if highest is not None else None
                if highest is not None and (modseq is None or modseq > highest):
                    continue  # changed while we planned: the next run looks again
                arrived = _aware(got.get(b"INTERNALDATE"))
                size = int(got[b"RFC822.SIZE"])
                meta = _meta(uid, got) if audit else None
                candidates.append(Candidate(uid, size, date, modseq, arrived, meta))
            all_uids: tuple[int, ...] = ()
            if not server_age and query.before is not None:
                all_uids = tuple(self._search(b"ALL", exists))
            return FolderSelection(
                folder,
                uidvalidity,
                exists,
                tuple(candidates),
                age_applied=server_age or query.before is None,
                all_uids=all_uids,
            )

    def clock_probe(
        self,
        folder: str,
        now: datetime,
        slack: timedelta,
        sample: tuple[int | str, datetime] | None = None,
    ) -> ClockProbe | None:
        """The newest message's INTERNALDATE and, with WITHIN, the server's own verdict on ``now``:
        by the server's clock that message is younger than (its age by ``now``) minus ``slack``
        when ``now`` runs ahead by more than ``slack``, and older than its age plus ``slack`` when
        ``now`` lags behind. Its INTERNALDATE cancels out, whoever set it. None: empty folder.

        With ``sample`` (a message the plan just fetched) and WITHIN, one search in the current
        selection does: ``UID u NOT YOUNGER s NOT OLDER s'`` finds the message exactly when the
        server finds the clock plausible; it must find it (a message gone meanwhile proves
        nothing), else the two questions are asked one by one on the newest message."""
        with translate_errors(self.account, f"clock probe in {folder}"):
            _uidvalidity, exists = self._select(folder, readonly=True, fresh=False)
            if sample is not None and "WITHIN" in self.capabilities():
                uid, stamp = sample
                younger, older = _within(now, stamp, slack)
                keys = (
                    b"NOT YOUNGER %d " % younger if younger >= 1 else b""
                ) + b"NOT OLDER %d" % older
                if self._search_uids(str(uid), keys):
                    return ClockProbe(stamp, False, False)
            if exists == 0:
                return None
            data = self._run("fetch", b"UID FETCH * (INTERNALDATE)", b"FETCH")[b"FETCH"]
            parsed = imap_wire.parse_fetch(data, [b"INTERNALDATE"])
            if parsed is None:  # unusual: the complete parser, for the UIDs the answer names
                named = {int(u) for u in re.findall(rb"UID (\d+)", b" ".join(_heads(data)))}
                parsed = fallback.parse_fetch(self.account, data, [b"INTERNALDATE"], named)
            if not parsed:
                return None
            uid = max(parsed)
            stamp = parsed[uid][b"INTERNALDATE"]
            if not isinstance(stamp, datetime):
                return None
            if "WITHIN" not in self.capabilities():
                return ClockProbe(stamp)
            younger, older = _within(now, stamp, slack)
            ahead = younger >= 1 and bool(self._search_uids(str(uid), b"YOUNGER %d" % younger))
            behind = bool(self._search_uids(str(uid), b"OLDER %d" % older))
            return ClockProbe(stamp, ahead, behind)

    def message_meta(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> dict[int | str, MessageMeta]:
        """Size, Message-ID and INTERNALDATE of those UIDs that still exist (one chunked UID FETCH)."""
        with translate_errors(self.account, f"fetch metadata in {folder}"):
            self._check(folder, uidvalidity, readonly=True)
            fetched = self._fetch(
                (int(u) for u in uids), [b"RFC822.SIZE", b"INTERNALDATE", _HEADER_MSGID]
            )
        return {uid: _meta(uid, item) for uid, item in fetched.items()}

    def fetch_message(self, folder: str, uidvalidity: int | None, uid: int | str) -> bytes:
        """The full message (``BODY.PEEK[]``, so \\Seen is not set)."""
        with translate_errors(self.account, f"fetch UID {uid} in {folder}"):
            self._check(folder, uidvalidity, readonly=True)
            item = self._fetch([int(uid)], [b"BODY.PEEK[]"]).get(int(uid))
        body = item.get(b"BODY[]") if item else None
        if not isinstance(body, bytes):
            raise ProtocolError(self.account, f"UID {uid} is no longer in {folder}")
        return body


def _meta(uid: int, item: dict[bytes, Any]) -> MessageMeta:
    """What the audit log records of a message: size, Message-ID, INTERNALDATE."""
    return MessageMeta(
        uid,
        int(item[b"RFC822.SIZE"]),
        imap_wire.header_value(item.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]"), "Message-ID"),
        _aware(item.get(b"INTERNALDATE")),
    )


def _within(now: datetime, stamp: datetime, slack: timedelta) -> tuple[int, int]:
    """WITHIN ages (seconds) of a message that arrived at ``stamp``: by the server's clock it is
    younger than the first when ``now`` runs ahead by more than ``slack``, older than the second
    when ``now`` lags behind by more than that."""
    age, margin = (now - stamp).total_seconds(), slack.total_seconds()
    return int(age - margin), max(1, int(age + margin) + 1)


def _heads(data: Sequence[Any]) -> list[bytes]:
    return [p[0] if isinstance(p, tuple) else p for p in data if isinstance(p, bytes | tuple)]


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:  # the fast parser's dates are UTC already
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _age_date(age: str, item: dict[bytes, Any]) -> datetime | None:
    """The date a message's age is measured from, or None when the server gave no usable one."""
    try:
        if age == "received":
            return _aware(item.get(b"INTERNALDATE"))
        if age == "saved":
            raw = item.get(b"SAVEDATE")
            return imap_wire.internaldate(raw) if isinstance(raw, bytes) else None
        text = imap_wire.header_value(item.get(b"BODY[HEADER.FIELDS (DATE)]"), "Date")
        return _aware(email.utils.parsedate_to_datetime(text)) if text else None
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
