"""A small scripted IMAP server on 127.0.0.1 that serves one mailbox in forms RFC 3501 allows but Dovecot never sends.

It keeps real state (folders, UIDs, flags, ``UID STORE``, ``UID EXPUNGE``) so that a check,
a plan and a cleanup can run against it end to end. Its answers to the commands quotawatch
reads with its own lean reader (LIST with ``RETURN (... STATUS ...)``, STATUS, GETQUOTAROOT,
UID SEARCH, UID FETCH, UID STORE, UID EXPUNGE, NOOP) use lower-case atoms, quoted header field
names (``body[header.fields ("message-id")]``), literals where a quoted string is usual
(mailbox names, INTERNALDATE), items in another order, and LIST extended items
(``("OLDNAME" ("Deleted Items"))``). The greeting, CAPABILITY, LOGIN and SELECT stay in the
usual upper case: imaplib reads those. ``capabilities`` picks quotawatch's path for folder
sizes: LIST-STATUS (with the folder list), STATUS=SIZE alone (one STATUS per folder) or neither
(sizes summed from ``UID FETCH (RFC822.SIZE)``).

``unplaceable``: how it answers the metadata ``UID FETCH`` (the one asking for INTERNALDATE)
instead: ``"no-uid"`` (the data without the UID item) or ``"flags-only"`` (the UID with
only FLAGS: none of the items asked). ``flag_on_store``: a UID that another client flags
right after quotawatch marks it ``\\Deleted`` (a user acting while the cleanup runs).
Any user and password are accepted; ``commands`` records every command, LOGIN redacted.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

from sandbox.loopback import Conversation, LoopbackServer, redact_command

__all__ = ["CAPABILITIES", "Message", "OddImapServer"]

CAPABILITIES = b"IMAP4rev1 LITERAL+ UIDPLUS QUOTA SPECIAL-USE LIST-EXTENDED LIST-STATUS STATUS=SIZE"
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_SPECIAL = {"Trash": b"\\Trash", "Sent": b"\\Sent"}


@dataclass
class Message:
    uid: int
    arrived: datetime
    data: bytes
    flags: set[bytes] = field(default_factory=set)

    @property
    def size(self) -> int:
        return len(self.data)

    def header(self, name: bytes) -> bytes:
        head = self.data.split(b"\r\n\r\n", 1)[0]
        lines = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(name.lower() + b":")]
        return b"".join(ln + b"\r\n" for ln in lines) + b"\r\n"


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def _internaldate(when: datetime) -> bytes:
    local = when.astimezone(timezone(timedelta(hours=2)))
    return b"%02d-%s-%04d %02d:%02d:%02d +0200" % (
        local.day, _MONTHS[local.month - 1].encode(), local.year,
        local.hour, local.minute, local.second,
    )  # fmt: skip


def _uid_set(text: bytes, top: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        a = top if low == b"*" else int(low)
        b = a if not high else top if high == b"*" else int(high)
        out.update(range(min(a, b), max(a, b) + 1))
    return out


def _day(text: bytes) -> date:
    d, m, y = text.decode().split("-")
    return date(int(y), _MONTHS.index(m.capitalize()) + 1, int(d))


class OddImapServer(LoopbackServer):
    """See the module docstring; ``folders`` maps a name to its messages (UIDs from 1)."""

    def __init__(
        self,
        folders: dict[str, list[tuple[bytes, datetime, set[bytes]]]],
        *,
        unplaceable: str | None = None,
        flag_on_store: int | None = None,
        capabilities: bytes = CAPABILITIES,
        max_seconds: float = 60.0,
    ) -> None:
        super().__init__(max_connections=8, lifetime=600.0)
        if unplaceable not in (None, "no-uid", "flags-only"):
            raise ValueError(f"unknown unplaceable form {unplaceable!r}")
        self.folders = {
            name: [Message(n, when, data, set(flags)) for n, (data, when, flags) in
                   enumerate(messages, 1)]
            for name, messages in folders.items()
        }  # fmt: skip
        self.unplaceable = unplaceable
        self.flag_on_store = flag_on_store
        self.capabilities = capabilities
        self.max_seconds = max_seconds
        self.commands: list[bytes] = []

    def uids(self, folder: str) -> list[int]:
        with self._lock:
            return [m.uid for m in self.folders[folder]]

    def flags(self, folder: str, uid: int) -> set[bytes]:
        with self._lock:
            return next(set(m.flags) for m in self.folders[folder] if m.uid == uid)

    # ------------------------------------------------------------------ machinery

    def _serve(self, sock: socket.socket, number: int) -> None:
        s = Conversation(sock, self._stop, max_seconds=self.max_seconds, max_bytes=1 << 20)
        if not s.send(b"* OK [CAPABILITY " + self.capabilities + b"] odd IMAP ready\r\n"):
            return
        selected: str | None = None
        for _ in range(10_000):
            command = s.read_imap_command()
            if command is None:
                return
            with self._lock:
                self.commands.append(redact_command(command, "imap"))
                tag, _, rest = command.partition(b" ")
                out, selected, done = self._answer(tag, rest, selected)
            if not s.send(out) or done:
                return

    def _answer(
        self, tag: bytes, rest: bytes, selected: str | None
    ) -> tuple[bytes, str | None, bool]:
        words = rest.split()
        verb = words[0].upper() if words else b""
        if verb == b"UID" and len(words) > 1:
            verb = b"UID " + words[1].upper()
        ok = tag + b" ok " + verb.lower() + b" done\r\n"
        if verb == b"CAPABILITY":
            return (
                b"* CAPABILITY " + self.capabilities + b"\r\n" + tag + b" OK done\r\n",
                selected,
                False,
            )
        if verb == b"LOGIN":
            return (
                tag + b" OK [CAPABILITY " + self.capabilities + b"] Logged in\r\n",
                selected,
                False,
            )
        if verb == b"LOGOUT":
            return b"* BYE bye\r\n" + tag + b" OK done\r\n", selected, True
        if verb in (b"NOOP", b"CHECK", b"ID", b"ENABLE", b"UNSELECT"):
            return ok, None if verb == b"UNSELECT" else selected, False
        if verb == b"GETQUOTAROOT":
            used = sum(m.size for ms in self.folders.values() for m in ms) // 1024
            return (b'* quotaroot inbox {10}\r\nUser quota\r\n* quota "User quota" '
                    b"(storage %d 10240)\r\n" % used + ok, selected, False)  # fmt: skip
        if verb == b"LIST":
            return self._list(rest) + ok, selected, False
        if verb == b"STATUS":
            name = words[1].strip(b'"').decode()
            return self._status(name) + ok, selected, False
        if verb in (b"SELECT", b"EXAMINE"):
            name = words[1].strip(b'"').decode()
            if name not in self.folders:
                return tag + b" NO no such folder\r\n", None, False
            ms = self.folders[name]
            access = b"READ-WRITE" if verb == b"SELECT" else b"READ-ONLY"
            out = (b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                   b"* %d EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] ok\r\n"
                   b"* OK [UIDNEXT %d] ok\r\n" % (len(ms), max((m.uid for m in ms), default=0) + 1)
                   + tag + b" OK [" + access + b"] done\r\n")  # fmt: skip
            return out, name, False
        if selected is None:
            return tag + b" BAD no folder selected\r\n", selected, False
        messages = self.folders[selected]
        if verb == b"UID SEARCH":
            found = self._search(messages, rest.split(None, 2)[2].split())
            if found is None:
                return tag + b" BAD unknown search key\r\n", selected, False
            return b"* search" + b"".join(b" %d" % u for u in found) + b"\r\n" + ok, selected, False
        if verb == b"UID FETCH":
            return self._fetch(messages, rest) + ok, selected, False
        if verb == b"UID STORE":
            return self._store(messages, selected, rest) + ok, selected, False
        if verb == b"UID EXPUNGE":
            uids = _uid_set(words[2], max((m.uid for m in messages), default=0))
            out = b""
            for seq in range(len(messages), 0, -1):
                m = messages[seq - 1]
                if m.uid in uids and b"\\DELETED" in {f.upper() for f in m.flags}:
                    del messages[seq - 1]
                    out += b"* %d expunge\r\n" % seq
            return out + ok, selected, False
        return tag + b" BAD unknown command\r\n", selected, False

    def _list(self, rest: bytes) -> bytes:
        out = b""
        for name in self.folders:
            flags = b"\\HasNoChildren" + (b" " + _SPECIAL[name] if name in _SPECIAL else b"")
            extended = b' ("OLDNAME" ("Deleted Items"))' if name == "Trash" else b""
            shown = b"inbox" if name == "INBOX" else _literal(name.encode())
            out += b'* list (%s) "/" %s%s\r\n' % (flags, shown, extended)
            if b"STATUS" in rest.upper():
                out += self._status(name)
        return out + b'* list (\\Noselect \\HasChildren) "/" Archive\r\n'

    def _status(self, name: str) -> bytes:
        ms = self.folders[name]
        return b"* status %s (size %d messages %d)\r\n" % (
            _literal(name.encode()), sum(m.size for m in ms), len(ms))  # fmt: skip

    def _search(self, messages: list[Message], keys: list[bytes]) -> list[int] | None:
        top = max((m.uid for m in messages), default=0)
        found = []
        for m in messages:
            flags = {f.upper() for f in m.flags}
            i, match = 0, True
            while i < len(keys):
                key = keys[i].upper()
                arg = keys[i + 1] if i + 1 < len(keys) else b""
                if key == b"ALL":
                    ok, n = True, 1
                elif key == b"UID":
                    ok, n = m.uid in _uid_set(arg, top), 2
                elif key in (b"BEFORE", b"SINCE"):
                    day = m.arrived.astimezone(UTC).date()
                    ok, n = (day < _day(arg)) if key == b"BEFORE" else (day >= _day(arg)), 2
                elif key in (b"LARGER", b"SMALLER"):
                    ok, n = (m.size > int(arg)) if key == b"LARGER" else (m.size < int(arg)), 2
                elif key.lstrip(b"UN") in (b"SEEN", b"FLAGGED", b"DELETED"):
                    flag = b"\\" + key.removeprefix(b"UN")
                    ok, n = (flag in flags) != key.startswith(b"UN"), 1
                elif re.fullmatch(rb"[\d:*,]+", key):
                    seqs = _uid_set(key, len(messages))
                    ok, n = messages.index(m) + 1 in seqs, 1
                else:
                    return None
                match, i = match and ok, i + n
            if match:
                found.append(m.uid)
        return found

    def _fetch(self, messages: list[Message], rest: bytes) -> bytes:
        words = rest.split(None, 3)
        uids = _uid_set(words[2], max((m.uid for m in messages), default=0))
        items = words[3].strip(b"()").upper()
        out = b""
        for seq, m in enumerate(messages, 1):
            if m.uid not in uids:
                continue
            parts = []
            if b"HEADER.FIELDS" in items:
                parts.append(
                    b'body[header.fields ("message-id")] ' + _literal(m.header(b"Message-ID"))
                )
            if b"INTERNALDATE" in items:
                parts.append(b"internaldate " + _literal(_internaldate(m.arrived)))
            if b"RFC822.SIZE" in items:
                parts.append(b"rfc822.size %d" % m.size)
            if b"FLAGS" in items:
                parts.append(b"flags (%s)" % b" ".join(sorted(m.flags)))
            if b"BODY[]" in items.replace(b".PEEK", b""):
                parts.append(b"body[] " + _literal(m.data))
            parts.append(b"uid %d" % m.uid)
            if b"INTERNALDATE" in items and self.unplaceable == "no-uid":
                parts.pop()
            elif b"INTERNALDATE" in items and self.unplaceable == "flags-only":
                parts = [b"uid %d" % m.uid, b"flags (%s)" % b" ".join(sorted(m.flags))]
            out += b"* %d fetch (%s)\r\n" % (seq, b" ".join(parts))
        return out

    def _store(self, messages: list[Message], folder: str, rest: bytes) -> bytes:
        words = rest.split(None, 4)
        uids = _uid_set(words[2], max((m.uid for m in messages), default=0))
        how, flags = words[3].upper(), set(words[4].strip(b"()").split())
        out = b""
        for seq, m in enumerate(messages, 1):
            if m.uid not in uids:
                continue
            if how.startswith(b"+"):
                m.flags |= flags
            elif how.startswith(b"-"):
                upper = {f.upper() for f in flags}
                m.flags = {f for f in m.flags if f.upper() not in upper}
            else:
                m.flags = set(flags)
            if not how.endswith(b".SILENT"):
                out += b"* %d fetch (flags (%s) uid %d)\r\n" % (
                    seq, b" ".join(sorted(f.lower() for f in m.flags)), m.uid)  # fmt: skip
            if m.uid == self.flag_on_store and how.startswith(b"+"):
                m.flags.add(b"\\Flagged")  # another client, right after the mark
                self.flag_on_store = None
        return out
