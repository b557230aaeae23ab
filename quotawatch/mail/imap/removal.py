"""Guarded IMAP removal: UID-exact delete and move that leave alone what changed or became protected since the plan."""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any

from quotawatch.errors import CapabilityMissing, SafetyStop
from quotawatch.mail.imap import searches
from quotawatch.mail.imap import wire as imap_wire
from quotawatch.mail.imap.errors import translate_errors
from quotawatch.mail.imap.syntax import chunks, uid_ranges
from quotawatch.mail.session import Keep

DELETED = b"\\Deleted"
CHANGED = "flagged, unseen or otherwise changed since the plan; left in place"
MODIFIED = "changed since the plan (the server reported it MODIFIED); left in place, not marked"
UNMARKED = "became protected after it was marked \\Deleted; the mark was taken off again"

Act = Callable[[list[int], Keep, MutableMapping[int | str, str]], list[int]]


def modseq_of(value: Any) -> int | None:
    """MODSEQ as the fast parser (``12``) or imapclient (``(12,)``) gives it; None if neither."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _protected(keep: Keep) -> bytes:
    """Search keys of messages the rule protects (empty: it protects nothing by flags)."""
    if keep.flagged and keep.unseen:
        return b"OR FLAGGED UNSEEN"
    return b"FLAGGED" if keep.flagged else b"UNSEEN" if keep.unseen else b""


class RemovalOps:
    """The removing half of RetentionOps (its base class): what it needs of the session is
    declared here. It never sends a bare EXPUNGE or CLOSE.

    Each chunk of planned UIDs goes through: a server-side re-selection with the rule's
    protections; the mark ``UID STORE (UNCHANGEDSINCE m) +FLAGS.SILENT (\\Deleted)`` (with
    CONDSTORE; else a plain STORE), whose ``[MODIFIED ...]`` UIDs are left alone; a last look for
    marked messages that became protected meanwhile, which get their mark taken off again; then
    ``UID EXPUNGE`` of exactly what stays marked. Between that last look and UID EXPUNGE one
    round trip remains in which a change goes unseen: IMAP has no conditional EXPUNGE.

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
        keys = b" ".join(
            k for k in (b"UNFLAGGED" if keep.flagged else b"", b"SEEN" if keep.unseen else b"") if k
        )
        return self._search_uids(uid_ranges(part), keys)

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
        """``UID STORE +FLAGS.SILENT (\\Deleted)``, conditional with ``since``; the UIDs marked."""
        uid_set = uid_ranges(uids).encode()
        cond = b" (UNCHANGEDSINCE %d)" % since if since is not None else b""
        line = b"UID STORE " + uid_set + cond + b" +FLAGS.SILENT (" + DELETED + b")"
        typ, text, _ = imap_wire.command(self.client._imap, line, ())
        if typ != "OK":
            self.client._checkok("store", typ, [text])
        modified = set(searches.modified_uids(text) or ()) if since is not None else set()
        for uid in modified:
            kept[uid] = MODIFIED
        return [u for u in uids if u not in modified]

    def _recheck(
        self, folder: str, marked: list[int], keep: Keep, kept: MutableMapping[int | str, str]
    ) -> list[int]:
        """After the mark, before UID EXPUNGE: unmark what became protected; the UIDs to expunge."""
        if self.before_expunge is not None:
            self.before_expunge(folder, list(marked))
        keys = _protected(keep)
        if not keys or not marked:
            return marked
        self._sync()
        turned = self._search_uids(uid_ranges(marked), keys)
        if turned:
            self._run(
                "store",
                b"UID STORE " + uid_ranges(turned).encode() + b" -FLAGS.SILENT (" + DELETED + b")",
            )
            for uid in turned:
                kept[uid] = UNMARKED
        gone = set(turned)
        return [u for u in marked if u not in gone]

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
        """Shared loop of delete and move: per chunk, re-select, act, count what left.
        ``conditional``: the act stores with UNCHANGEDSINCE where there are mod-sequences, which
        needs no fresh look before the re-selection."""
        self._check(folder, uidvalidity, readonly=False, fresh=not uids)  # the probe selects afresh
        keep = keep or Keep()
        notes: MutableMapping[int | str, str] = kept if kept is not None else {}
        removed = 0
        for part in chunks(sorted({int(u) for u in uids})):
            if not conditional or self._guard(part, keep) is None:
                self._sync()
            eligible = self._eligible(part, keep)
            present = set(eligible)
            for uid in part:
                if uid not in present:
                    notes[uid] = CHANGED  # or gone: the caller tells which by looking
            if not eligible:
                continue
            acted = act(eligible, keep, notes)
            if acted:
                survivors = self._search_uids(uid_ranges(acted))
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
            marked = self._mark(eligible, self._guard(eligible, keep), notes)
            doomed = self._recheck(folder, marked, keep, notes)
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
            doomed = self._recheck(folder, marked, keep, notes)
            if doomed:
                self._run("expunge", b"UID EXPUNGE " + uid_ranges(doomed).encode())
            return doomed

        with translate_errors(self.account, f"move from {folder} to {target}"):
            return self._remove(folder, uidvalidity, uids, keep, kept, act, False)
