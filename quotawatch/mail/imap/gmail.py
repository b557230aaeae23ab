"""Gmail's delete path: a message leaves a label folder by ``UID MOVE`` to ``\\Trash`` and is removed there.

Gmail keeps a message that is deleted and expunged in a label folder in "All Mail" (its IMAP
default "archive the message"), still using quota; only Trash and Spam really remove (Google,
"Read Gmail messages on other email clients using IMAP"). So for a ``provider: gmail`` account a
delete outside Trash and Spam moves exactly the planned UIDs to the ``\\Trash`` folder and then
removes exactly the UIDs they got there, as the server reported them in ``COPYUID`` (RFC 4315,
RFC 6851), under Trash's UIDVALIDITY from that same report. Without a usable ``COPYUID`` the
messages stay in Trash (nothing else there is touched) for the Trash rule or Gmail's 30 days.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping, Sequence

from quotawatch.config.profiles import GMAIL_BINS
from quotawatch.errors import CapabilityMissing
from quotawatch.mail.imap import wire as imap_wire
from quotawatch.mail.imap.errors import translate_errors
from quotawatch.mail.imap.removal import DELETED
from quotawatch.mail.imap.retention import RetentionOps
from quotawatch.mail.imap.syntax import quote_mailbox, uid_ranges
from quotawatch.mail.session import Keep

log = logging.getLogger(__name__)

_COPYUID = re.compile(rb"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]", re.IGNORECASE)


def parse_copyuid(texts: Sequence[bytes | str]) -> tuple[int, str] | None:
    """(destination UIDVALIDITY, destination UID set) from the responses to a MOVE, or None."""
    for text in texts:
        raw = text.encode() if isinstance(text, str) else text
        found = _COPYUID.search(raw)
        if found:
            return int(found.group(1)), found.group(3).decode("ascii")
    return None


class GmailOps(RetentionOps):
    """``delete`` for ``provider: gmail``: outside Trash and Spam, move to Trash and remove there."""

    profile: str | None = None

    def _list(self) -> list[tuple[str, str | None]]:
        raise NotImplementedError

    def delete(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        if self.profile != "gmail" or not uids:
            return super().delete(folder, uidvalidity, uids, keep, kept)
        with translate_errors(self.account, "LIST"):
            specials = dict(self._list())
        flag = (specials.get(folder) or "").lower()
        if flag in GMAIL_BINS or folder.lower() in GMAIL_BINS:
            return super().delete(folder, uidvalidity, uids, keep, kept)
        trash = next((name for name, f in specials.items() if f == "\\Trash"), None)
        if trash is None:
            raise CapabilityMissing(self.account, "a \\Trash folder", f"deleting in {folder}")
        if not {"MOVE", "UIDPLUS"} <= self.capabilities():
            raise CapabilityMissing(self.account, "MOVE and UIDPLUS", f"deleting in {folder}")
        landed: list[tuple[int, str] | None] = []

        def act(
            eligible: list[int], keep: Keep, notes: MutableMapping[int | str, str]
        ) -> list[int]:
            """UID MOVE of the planned UIDs the re-selection still finds unprotected and
            unchanged (as RemovalOps.move does), noting where they landed."""
            same = self._unchanged(eligible, keep, notes)
            if same:
                line = b"UID MOVE " + uid_ranges(same).encode() + b" " + quote_mailbox(trash)
                typ, text, got = imap_wire.command(self.client._imap, line, (b"OK",))
                if typ != "OK":
                    self.client._checkok("move", typ, [text])
                landed.append(parse_copyuid([*got[b"OK"], text]))
            return same

        with translate_errors(self.account, f"move from {folder} to {trash}"):
            removed = self._remove(folder, uidvalidity, uids, keep, kept, act, False)
        self._purge(trash, landed)
        return removed

    def _purge(self, trash: str, landed: Sequence[tuple[int, str] | None]) -> None:
        """Remove in Trash exactly the UIDs the moves reported, under the reported UIDVALIDITY."""
        if any(x is None for x in landed):
            log.warning(
                "account=%s: the server did not say where moved messages landed (no COPYUID); "
                "they stay in %s", self.account, trash,
            )  # fmt: skip
        with translate_errors(self.account, f"delete in {trash}"):
            for validity, dest in (x for x in landed if x is not None):
                actual = self._select(trash, readonly=False)[0]
                if actual != validity:
                    log.warning(
                        "account=%s: UIDVALIDITY of %s changed during the move; the moved "
                        "messages stay there", self.account, trash,
                    )  # fmt: skip
                    continue
                existing = self._search_uids(dest)
                if not existing:
                    continue
                uid_set = uid_ranges(existing).encode()
                self._run("store", b"UID STORE " + uid_set + b" +FLAGS.SILENT (" + DELETED + b")")
                self._run("expunge", b"UID EXPUNGE " + uid_set)
                self._drop_noise()
