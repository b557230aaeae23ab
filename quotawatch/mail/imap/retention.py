"""IMAP retention operations: server-side candidate search, metadata fetches, UID-exact delete and move."""

from __future__ import annotations

import email.utils
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from quotawatch.errors import CapabilityMissing, ProtocolError, SafetyStop
from quotawatch.mail.imap import fallback
from quotawatch.mail.imap import wire as imap_wire
from quotawatch.mail.imap.errors import translate_errors
from quotawatch.mail.imap.syntax import chunks, uid_ranges
from quotawatch.mail.limits import body_allowance
from quotawatch.mail.session import Candidate, FolderSelection, MessageMeta, SearchQuery

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


class RetentionOps:
    """The retention half of ImapSession (its base class): what it needs of the session is
    declared here; it never sends a bare EXPUNGE or CLOSE."""

    account: str
    client: Any
    _selected: str | None
    _selected_readonly: bool
    _uidvalidity: int | None

    def capabilities(self) -> frozenset[str]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ low level
    def _select(self, folder: str, *, readonly: bool, fresh: bool = True) -> tuple[int, int]:
        """SELECT (or EXAMINE) a folder, never CLOSE; without ``fresh`` a fitting current selection
        is reused. Returns (UIDVALIDITY, EXISTS); EXISTS is -1 for a reused selection."""
        if not fresh and self._selected == folder and (readonly or not self._selected_readonly):
            assert self._uidvalidity is not None
            return self._uidvalidity, -1
        info = self.client.select_folder(folder, readonly=readonly)
        self._selected, self._selected_readonly = folder, readonly
        self._uidvalidity = int(info[b"UIDVALIDITY"])
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
        typ, text, got = imap_wire.command(self.client._imap, line, want, body=body)
        if typ != "OK":
            self.client._checkok(name, typ, [text])
        return got

    def _search(self, criteria: list[Any]) -> list[int]:
        found = sorted(int(u) for u in self.client.search(criteria))
        self._drop_noise()
        return found

    def _search_uids(self, uid_set: str) -> list[int]:
        """``UID SEARCH UID <set>``: which of these UIDs exist now, sorted."""
        data = self._run("search", b"UID SEARCH UID " + uid_set.encode(), b"SEARCH")[b"SEARCH"]
        uids = imap_wire.parse_search(data)
        if uids is None:
            raise ProtocolError(self.account, f"unexpected SEARCH response: {str(data)[:200]}")
        return uids

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
        size and date for the matches only.

        Day-granular date keys (SAVEDBEFORE, BEFORE, SENTBEFORE ignore time and time zone) are sent
        two days late, so they select a superset; each match is then confirmed against the exact
        fetched date. This is exact whatever the server's clock or time zone. Without SAVEDATE,
        ``age: saved`` is left to the caller's first-seen records (``age_applied=False``).
        """
        with translate_errors(self.account, f"search {folder}"):
            uidvalidity, exists = self._select(folder, readonly=True)
            if exists == 0:
                return FolderSelection(folder, uidvalidity, 0, ())
            server_age = query.before is not None and (
                query.age != "saved" or "SAVEDATE" in self.capabilities()
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
            uids = self._search(criteria or ["ALL"])
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
                candidates.append(Candidate(uid, int(got[b"RFC822.SIZE"]), date))
            all_uids: tuple[int, ...] = ()
            if not server_age and query.before is not None:
                all_uids = tuple(self._search(["ALL"]))
            return FolderSelection(
                folder,
                uidvalidity,
                exists,
                tuple(candidates),
                age_applied=server_age or query.before is None,
                all_uids=all_uids,
            )

    def message_meta(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> dict[int | str, MessageMeta]:
        """Size, Message-ID and INTERNALDATE of those UIDs that still exist (one chunked UID FETCH)."""
        with translate_errors(self.account, f"fetch metadata in {folder}"):
            self._check(folder, uidvalidity, readonly=True)
            fetched = self._fetch(
                (int(u) for u in uids), [b"RFC822.SIZE", b"INTERNALDATE", _HEADER_MSGID]
            )
        return {
            uid: MessageMeta(
                uid,
                int(item[b"RFC822.SIZE"]),
                imap_wire.header_value(item.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]"), "Message-ID"),
                _aware(item.get(b"INTERNALDATE")),
            )
            for uid, item in fetched.items()
        }

    def fetch_message(self, folder: str, uidvalidity: int | None, uid: int | str) -> bytes:
        """The full message (``BODY.PEEK[]``, so \\Seen is not set)."""
        with translate_errors(self.account, f"fetch UID {uid} in {folder}"):
            self._check(folder, uidvalidity, readonly=True)
            item = self._fetch([int(uid)], [b"BODY.PEEK[]"]).get(int(uid))
        body = item.get(b"BODY[]") if item else None
        if not isinstance(body, bytes):
            raise ProtocolError(self.account, f"UID {uid} is no longer in {folder}")
        return body

    def _remove(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str], act: Any
    ) -> int:
        """Shared loop of delete and move: per chunk, act on the UIDs that exist, count what left."""
        self._check(folder, uidvalidity, readonly=False, fresh=not uids)  # the probe selects afresh
        removed = 0
        for part in chunks(sorted({int(u) for u in uids})):
            existing = self._search_uids(uid_ranges(part))
            if not existing:
                continue
            uid_set = uid_ranges(existing)
            act(uid_set)
            survivors = self._search_uids(uid_set)
            removed += len(existing) - len(survivors)
            self._drop_noise()
        return removed

    def delete(self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]) -> int:
        """``UID STORE +FLAGS.SILENT (\\Deleted)`` then ``UID EXPUNGE`` of the same explicit set.

        Never a bare EXPUNGE or CLOSE, which would also remove what other clients marked \\Deleted.
        With no UIDs this only checks the capability and UIDVALIDITY (the executor's probe).
        """
        if "UIDPLUS" not in self.capabilities():
            raise CapabilityMissing(
                self.account, "UIDPLUS", "UID EXPUNGE; without it quotawatch refuses to delete"
            )

        def act(uid_set: str) -> None:
            self._run(
                "store", b"UID STORE " + uid_set.encode() + b" +FLAGS.SILENT (" + DELETED + b")"
            )
            self._run("expunge", b"UID EXPUNGE " + uid_set.encode())

        with translate_errors(self.account, f"delete in {folder}"):
            return self._remove(folder, uidvalidity, uids, act)

    def marked_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> set[int | str]:
        """Those of ``uids`` that carry ``\\Deleted`` now (``UID SEARCH UID <set> DELETED``)."""
        found: set[int | str] = set()
        with translate_errors(self.account, f"search {folder}"):
            self._check(folder, uidvalidity, readonly=True)
            for part in chunks(sorted({int(u) for u in uids})):
                line = b"UID SEARCH UID " + uid_ranges(part).encode() + b" DELETED"
                data = self._run("search", line, b"SEARCH")[b"SEARCH"]
                got = imap_wire.parse_search(data)
                if got is None:
                    raise ProtocolError(
                        self.account, f"unexpected SEARCH response: {str(data)[:200]}"
                    )
                found.update(got)
        return found

    def unmark_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> None:
        """``UID STORE <set> -FLAGS.SILENT (\\Deleted)`` of exactly these UIDs."""
        with translate_errors(self.account, f"unmark in {folder}"):
            self._check(folder, uidvalidity, readonly=False)
            for part in chunks(sorted({int(u) for u in uids})):
                line = (
                    b"UID STORE " + uid_ranges(part).encode() + b" -FLAGS.SILENT (" + DELETED + b")"
                )
                self._run("store", line)
            self._drop_noise()

    def move(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str], target: str
    ) -> int:
        """``UID MOVE`` when offered, else ``UID COPY`` + the delete sequence above."""
        caps = self.capabilities()
        if "MOVE" not in caps and "UIDPLUS" not in caps:
            raise CapabilityMissing(self.account, "MOVE or UIDPLUS", f"moving messages to {target}")
        if target == folder:
            raise SafetyStop(self.account, f"cannot move messages from {folder} to itself")

        def act(uid_set: str) -> None:
            if "MOVE" in caps:
                self.client.move(uid_set, target)
            else:
                self.client.copy(uid_set, target)
                self.client.add_flags(uid_set, [DELETED], silent=True)
                self.client.uid_expunge(uid_set)

        with translate_errors(self.account, f"move from {folder} to {target}"):
            return self._remove(folder, uidvalidity, uids, act)


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
        text = imap_wire.header_value(item.get(b"BODY[HEADER.FIELDS (DATE)]"), "Date")
        return _aware(email.utils.parsedate_to_datetime(text)) if text else None
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


# ---------------------------------------------------------------------------------- operations
