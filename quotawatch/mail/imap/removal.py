"""Guarded IMAP removal: UID-exact delete and move that leave alone what changed or became protected since the plan."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any

from quotawatch.errors import CapabilityMissing, SafetyStop
from quotawatch.mail.imap import searches
from quotawatch.mail.imap.errors import translate_errors
from quotawatch.mail.imap.syntax import chunks, uid_ranges
from quotawatch.mail.session import Keep

DELETED = b"\\Deleted"
CHANGED = "flagged, unseen or otherwise changed since the plan; left in place"
MODIFIED = "changed since the plan (the server reported it MODIFIED); left in place, not marked"
UNMARKED = "became protected after it was marked \\Deleted; the mark was taken off again"
GONE = "no longer on the server when its batch began"
STAYED = "still on the server after the command"
#: atoms are case-insensitive (RFC 3501): a server may answer ``* 2 fetch (flags () uid 2)``
_FETCH_UID = re.compile(rb"\d+ \((?:.* )?UID (\d+)[ )]", re.IGNORECASE)
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^()]*)\)", re.IGNORECASE)

Act = Callable[[list[int], Keep, MutableMapping[int | str, str]], list[int]]


def modseq_of(value: Any) -> int | None:
    """MODSEQ as the fast parser (``12``) or imapclient (``(12,)``) gives it; None if neither."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stored_flags(data: Sequence[Any]) -> dict[int, list[bytes]] | None:
    """UID -> flags of the FETCH responses a non-silent ``UID STORE`` returns (the last response
    of a UID wins); responses without UID (another session's change, by sequence number) are
    skipped. None when a response cannot be read (a literal): the caller looks another way."""
    out: dict[int, list[bytes]] = {}
    for part in data:
        if not isinstance(part, bytes):
            return None
        uid, flags = _FETCH_UID.match(part), _FETCH_FLAGS.search(part)
        if uid is None:
            continue
        if flags is None:
            return None
        out[int(uid.group(1))] = flags.group(1).upper().split()
    return out


def _unprotected(keep: Keep) -> bytes:
    """Search keys of messages the rule's protections let go (``ALL`` when there are none)."""
    keys = [k for k, on in ((b"UNFLAGGED", keep.flagged), (b"SEEN", keep.unseen)) if on]
    return b" ".join(keys) or b"ALL"


def _protected(keep: Keep) -> bytes:
    """Search keys of messages the rule protects (empty: it protects nothing by flags)."""
    if keep.flagged and keep.unseen:
        return b"OR FLAGGED UNSEEN"
    return b"FLAGGED" if keep.flagged else b"UNSEEN" if keep.unseen else b""


class RemovalOps:
    """The removing half of RetentionOps (its base class): what it needs of the session is
    declared here. It never sends a bare EXPUNGE or CLOSE.

    Each chunk of planned UIDs goes through: the mark ``UID STORE (UNCHANGEDSINCE m)
    +FLAGS.SILENT (\\Deleted)`` (with CONDSTORE), whose ``[MODIFIED ...]`` UIDs are left alone;
    without CONDSTORE a server-side re-selection with the rule's protections (after a NOOP) and
    a plain STORE; then, after a NOOP, one search for the marked UIDs that still exist, carry
    the mark and are unprotected: exactly those are expunged with ``UID EXPUNGE``, and one that
    became protected meanwhile gets its mark taken off again. Between that search and UID
    EXPUNGE one round trip remains in which a change goes unseen: IMAP has no conditional
    EXPUNGE. What left is read from the server's VANISHED answers (QRESYNC), else searched for
    (``UID SEARCH UID <set>``).

    With CONDSTORE the re-selection before the mark would add nothing: a message the user
    flagged, or changed in any other way, since the plan has a mod-sequence above ``m`` and is
    reported MODIFIED instead of marked; one that is gone is not found by the search after the
    mark.

    One ``UNCHANGEDSINCE`` value serves a whole chunk: the largest planned mod-sequence. That is
    exact because planning dropped every candidate whose mod-sequence was above the folder's
    HIGHESTMODSEQ read when planning began, and any later change to a message gives it a
    mod-sequence above that HIGHESTMODSEQ (RFC 7162: mod-sequences only grow), hence above the
    chunk's value: the STORE marks a message exactly when it did not change since the plan.
    """

    account: str
    client: Any
    #: called with (folder, UIDs) after they were marked \Deleted and before the last check and
    #: UID EXPUNGE; tests set it to act at exactly that moment (None: nothing happens)
    before_expunge: Callable[[str, Sequence[int]], None] | None = None

    def capabilities(self) -> frozenset[str]:
        raise NotImplementedError

    def _check(
        self, folder: str, expected: int | None, *, readonly: bool, fresh: bool = False
    ) -> None:
        raise NotImplementedError

    def _run(self, name: str, line: bytes, *want: bytes) -> dict[bytes, list[Any]]:
        raise NotImplementedError

    def _command(self, name: str, line: bytes, *want: bytes) -> tuple[str, dict[bytes, list[Any]]]:
        raise NotImplementedError

    def _gone(self, uids: Sequence[int]) -> set[int] | None:
        raise NotImplementedError

    def _search_uids(self, uid_set: str, keys: bytes = b"") -> list[int]:
        raise NotImplementedError

    def _fetch(self, uids: Iterable[int], items: Sequence[bytes]) -> dict[int, dict[bytes, Any]]:
        raise NotImplementedError

    def _drop_noise(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ steps
    def _sync(self) -> None:
        """NOOP: the server looks at what other sessions changed. Dovecot answers SEARCH and FETCH
        from the state of the end of our previous command; only a conditional STORE sees the
        present state by itself."""
        self._run("noop", b"NOOP")

    def _guard(self, part: Sequence[int], keep: Keep) -> int | None:
        """The chunk's UNCHANGEDSINCE value: the largest planned mod-sequence, or None when the
        server keeps none or any UID of the chunk has none (then flags are re-checked instead)."""
        if "CONDSTORE" not in self.capabilities() or not keep.modseqs:
            return None
        values = [keep.modseqs.get(u) for u in part]
        return max(v for v in values if v is not None) if None not in values else None

    def _eligible(self, part: Sequence[int], keep: Keep) -> list[int]:
        """The UIDs of the chunk that still exist and are, by the server, still unprotected: the
        selection re-run just before the deed. (Mod-sequences are not searched here: Dovecot 2.3
        answers ``NOT MODSEQ n`` with nothing at all; the STORE condition covers them.)"""
        keys = _unprotected(keep)
        return self._search_uids(uid_ranges(part), b"" if keys == b"ALL" else keys)

    def _unchanged(
        self, uids: list[int], keep: Keep, kept: MutableMapping[int | str, str]
    ) -> list[int]:
        """Those of ``uids`` whose mod-sequence is still the planned one (for UID MOVE, which
        takes no condition); without planned mod-sequences, all of them."""
        if self._guard(uids, keep) is None:
            return uids
        now = self._fetch(uids, [b"MODSEQ"])
        same = [u for u in uids if u in now and modseq_of(now[u].get(b"MODSEQ")) == keep.modseqs[u]]
        for uid in set(uids) - set(same):
            kept[uid] = CHANGED
        return same

    def _mark(
        self, uids: list[int], since: int | None, kept: MutableMapping[int | str, str]
    ) -> list[int]:
        """``UID STORE +FLAGS.SILENT (\\Deleted)``, conditional with ``since``; the UIDs not
        reported MODIFIED (a UID that no longer exists is simply not marked)."""
        uid_set = uid_ranges(uids).encode()
        cond = b" (UNCHANGEDSINCE %d)" % since if since is not None else b""
        text, _ = self._command(
            "store", b"UID STORE " + uid_set + cond + b" +FLAGS.SILENT (" + DELETED + b")"
        )
        modified = set(searches.modified_uids(text) or ()) if since is not None else set()
        for uid in modified:
            kept[uid] = MODIFIED
        return [u for u in uids if u not in modified]

    def _recheck(
        self,
        folder: str,
        marked: list[int],
        keep: Keep,
        kept: MutableMapping[int | str, str],
        known: bool,
    ) -> list[int]:
        """After the mark, before UID EXPUNGE: the marked UIDs that exist, carry the mark and are
        unprotected now (``UID SEARCH UID <set> DELETED UNFLAGGED [SEEN]`` after a NOOP), which
        are the ones to expunge; one that became protected gets its mark taken off again.
        ``known``: a re-selection before the mark already found them, and without protections
        there is nothing to look at; else the search also tells which are gone."""
        if self.before_expunge is not None:
            self.before_expunge(folder, list(marked))
        if not marked or (known and not _protected(keep)):
            return marked
        if _protected(keep):
            self._sync()
        doomed = self._search_uids(uid_ranges(marked), b"DELETED " + _unprotected(keep))
        found = set(doomed)
        left = [u for u in marked if u not in found]
        if left:  # protected now (the answer names those whose mark it took off), or gone
            line = b"UID STORE " + uid_ranges(left).encode() + b" -FLAGS (" + DELETED + b")"
            _text, got = self._command("store", line, b"FETCH")
            named = stored_flags(got[b"FETCH"])
            for uid in left:
                kept[uid] = UNMARKED if named is None or uid in named else GONE
        return doomed

    def _remove(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        keep: Keep | None,
        kept: MutableMapping[int | str, str] | None,
        act: Act,
        conditional: bool,
    ) -> int:
        """Shared loop of delete and move: per chunk, re-select, act, count what left; every
        UID left in place gets its reason in ``kept``. ``conditional``: the act stores with
        UNCHANGEDSINCE where there are mod-sequences, which makes the re-selection redundant."""
        self._check(folder, uidvalidity, readonly=False, fresh=not uids)  # the probe selects afresh
        keep = keep or Keep()
        notes: MutableMapping[int | str, str] = kept if kept is not None else {}
        removed = 0
        for part in chunks(sorted({int(u) for u in uids})):
            eligible = list(part)
            if not conditional or self._guard(part, keep) is None:
                self._sync()
                eligible = self._eligible(part, keep)
                left = [u for u in part if u not in set(eligible)]
                exist = set(self._search_uids(uid_ranges(left))) if left else set()
                for uid in left:
                    notes[uid] = CHANGED if uid in exist else GONE
            if not eligible:
                continue
            acted = act(eligible, keep, notes)
            if acted:
                gone = self._gone(acted) if conditional else None  # delete: its own EXPUNGE
                if gone is None:  # no VANISHED answers to go by: search for what is left
                    survivors = self._search_uids(uid_ranges(acted))
                else:
                    survivors = [u for u in acted if u not in gone]
                for uid in survivors:
                    notes[uid] = STAYED
                removed += len(acted) - len(survivors)
            self._drop_noise()
        return removed

    # ------------------------------------------------------------------------------ operations
    def marked_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> set[int | str]:
        """Those of ``uids`` that carry ``\\Deleted`` now (``UID SEARCH UID <set> DELETED``)."""
        found: set[int | str] = set()
        with translate_errors(self.account, f"search {folder}"):
            self._check(folder, uidvalidity, readonly=True)
            for part in chunks(sorted({int(u) for u in uids})):
                found.update(self._search_uids(uid_ranges(part), b"DELETED"))
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

    def delete(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        """Mark, re-check and ``UID EXPUNGE`` exactly the planned UIDs that are still unprotected
        and unchanged (see the class); never a bare EXPUNGE or CLOSE, which would also remove what
        other clients marked \\Deleted. With no UIDs this only checks the capability and
        UIDVALIDITY (the executor's probe)."""
        if "UIDPLUS" not in self.capabilities():
            raise CapabilityMissing(
                self.account, "UIDPLUS", "UID EXPUNGE; without it quotawatch refuses to delete"
            )

        def act(
            eligible: list[int], keep: Keep, notes: MutableMapping[int | str, str]
        ) -> list[int]:
            guard = self._guard(eligible, keep)
            marked = self._mark(eligible, guard, notes)
            doomed = self._recheck(folder, marked, keep, notes, guard is None)
            if doomed:
                self._run("expunge", b"UID EXPUNGE " + uid_ranges(doomed).encode())
            return doomed

        with translate_errors(self.account, f"delete in {folder}"):
            return self._remove(folder, uidvalidity, uids, keep, kept, act, True)

    def move(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        target: str,
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        """``UID MOVE`` when offered, else ``UID COPY`` + the delete sequence above, of the planned
        UIDs the re-selection just before still finds unprotected (and unchanged, with
        CONDSTORE). UID MOVE has no condition: a change in the one round trip between re-selection
        and MOVE moves the message anyway (it stays in the account). Without MOVE, a message that
        changed after the COPY stays in place and its copy remains in ``target``."""
        caps = self.capabilities()
        if "MOVE" not in caps and "UIDPLUS" not in caps:
            raise CapabilityMissing(self.account, "MOVE or UIDPLUS", f"moving messages to {target}")
        if target == folder:
            raise SafetyStop(self.account, f"cannot move messages from {folder} to itself")

        def act(
            eligible: list[int], keep: Keep, notes: MutableMapping[int | str, str]
        ) -> list[int]:
            if "MOVE" in caps:
                same = self._unchanged(eligible, keep, notes)
                if same:
                    self.client.move(uid_ranges(same), target)
                return same
            self.client.copy(uid_ranges(eligible), target)
            marked = self._mark(eligible, self._guard(eligible, keep), notes)
            doomed = self._recheck(folder, marked, keep, notes, True)
            if doomed:
                self._run("expunge", b"UID EXPUNGE " + uid_ranges(doomed).encode())
            return doomed

        with translate_errors(self.account, f"move from {folder} to {target}"):
            return self._remove(folder, uidvalidity, uids, keep, kept, act, False)
