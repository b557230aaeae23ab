"""The IMAP mailbox session: TLS, login modes, quota, folders with sizes, and safe UID-based changes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.imap_utf7 import encode as encode_utf7
from imapclient.response_parser import parse_response
from pydantic import SecretStr

from quotawatch import imap_wire
from quotawatch.config import Account, TlsMode
from quotawatch.errors import (
    AuthError,
    CapabilityMissing,
    ConnectError,
    MailboxError,
    ProtocolError,
    TLSError,
    transport_error,
)
from quotawatch.imap_client import GreetingClient
from quotawatch.mailbox import FolderSelection, MessageMeta, SearchQuery
from quotawatch.model import FolderInfo, QuotaResource
from quotawatch.tls import tls_context

log = logging.getLogger(__name__)

SPECIAL_USE = {"\\ALL", "\\ARCHIVE", "\\DRAFTS", "\\FLAGGED", "\\JUNK", "\\SENT", "\\TRASH"}
#: UIDs per UID FETCH / STORE / EXPUNGE command, to keep command lines well under server limits
UID_CHUNK = 2000


def quote_mailbox(name: str) -> bytes:
    """A mailbox name as an IMAP quoted string, modified-UTF-7 encoded."""
    encoded: bytes = encode_utf7(name)
    return b'"' + encoded.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def uid_ranges(uids: Sequence[int]) -> str:
    """``1:3,7,9:10`` for [1, 2, 3, 7, 9, 10]."""
    ordered = sorted(set(uids))
    if not ordered:
        return ""
    out: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid != prev + 1:
            out.append(str(start) if start == prev else f"{start}:{prev}")
            start = uid
        prev = uid
    out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


def chunks(items: Sequence[Any], size: int = UID_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _reason(exc: BaseException) -> str:
    """The server's or library's words, without Python's bytes repr."""
    text = _text(exc.args[0] if exc.args else exc).strip()
    if len(text) > 2 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        text = text[2:-1]
    return text[:300]


@contextlib.contextmanager
def translate_errors(account: str, doing: str) -> Iterator[None]:
    """Turn socket, TLS and IMAP library exceptions into quotawatch's MailboxError subclasses."""
    try:
        yield
    except MailboxError:
        raise
    except (OSError, EOFError) as exc:  # sockets and TLS
        raise transport_error(account, doing, exc) from None
    except LoginError as exc:
        raise AuthError(account, f"login refused: {_reason(exc)}") from None
    except IMAPClientAbortError as exc:  # a BYE or a broken stream: the session is gone
        raise ConnectError(account, f"connection lost ({doing}): {_reason(exc)}") from None
    except IMAPClientError as exc:
        raise ProtocolError(account, f"server refused ({doing}): {_reason(exc)}") from None


class ImapSession:
    """One logged-in IMAP connection to one account. Never sends a bare EXPUNGE or CLOSE."""

    protocol = "imap"
    deferred_deletes = False

    def __init__(self, account: str, client: imapclient.IMAPClient) -> None:
        self.account = account
        self.client = client
        self._caps: frozenset[str] = frozenset()
        self._selected: str | None = None
        self._selected_readonly = True
        self._uidvalidity: int | None = None
        imap = client._imap
        if imap.state == "NONAUTH" and (
            not client._starttls_done or getattr(imap, "read_after_starttls", False)
        ):  # what imaplib read at connect, or afresh over TLS after STARTTLS
            self._caps = frozenset(_text(c).upper() for c in imap.capabilities)
        else:
            self._refresh_capabilities()

    # ------------------------------------------------------------------ connection
    @classmethod
    def connect(cls, account: Account, password: SecretStr) -> ImapSession:
        """Connect, secure the link as configured, log in, and re-read capabilities."""
        name = account.name
        timeout = imapclient.SocketTimeout(connect=account.connect_timeout, read=account.timeout)
        ctx = tls_context(account.ca_file) if account.tls is not TlsMode.none else None
        with translate_errors(name, f"connect to {account.host}:{account.effective_port}"):
            client = GreetingClient(
                account.host,
                port=account.effective_port,
                ssl=account.tls is TlsMode.implicit,
                ssl_context=ctx if account.tls is TlsMode.implicit else None,
                timeout=timeout,
            )
        client._imap.debug = 0  # imaplib's own debug output could show AUTHENTICATE data
        try:
            with translate_errors(name, "STARTTLS"):
                if account.tls is TlsMode.starttls:
                    caps = {_text(c).upper() for c in client.capabilities()}
                    if "STARTTLS" not in caps:
                        raise TLSError(
                            name,
                            "server does not offer STARTTLS; refusing to send "
                            "credentials over an unencrypted link",
                        )
                    client.starttls(ctx)
            session = cls(name, client)
            with translate_errors(name, "login"):
                session._login(account, password)
            session._refresh_capabilities()
            return session
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise

    def _login(self, account: Account, password: SecretStr) -> None:
        secret = password.get_secret_value()
        if account.authorize_as:
            if "AUTH=PLAIN" not in self._caps:
                raise CapabilityMissing(self.account, "AUTH=PLAIN", "authorize_as")
            self.client.plain_login(
                account.username, secret, authorization_identity=account.authorize_as
            )
        elif "LOGINDISABLED" in self._caps and "AUTH=PLAIN" in self._caps:
            self.client.plain_login(account.username, secret)
        else:
            self.client.login(account.username, secret)

    def _refresh_capabilities(self) -> None:
        self.client._cached_capabilities = None
        with translate_errors(self.account, "CAPABILITY"):
            self._caps = frozenset(_text(c).upper() for c in self.client.capabilities())

    def capabilities(self) -> frozenset[str]:
        return self._caps

    def close(self) -> None:
        """LOGOUT (never CLOSE, which would expunge); errors are ignored."""
        with contextlib.suppress(Exception):
            self.client.logout()
        with contextlib.suppress(Exception):
            self.client.shutdown()

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, name: str, line: bytes, *want: bytes) -> dict[bytes, list[Any]]:
        """One command line (arguments pre-quoted) through the lean reader; NO/BAD raise."""
        typ, text, got = imap_wire.command(self.client._imap, line, want)
        if typ != "OK":
            self.client._checkok(name, typ, [text])
        return got

    # ------------------------------------------------------------------ quota
    def quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        """All quota roots and resources of INBOX; STORAGE converted from KiB to bytes."""
        if "QUOTA" not in self._caps:
            return (), ("server lacks QUOTA; no quota can be read",)
        with translate_errors(self.account, "GETQUOTAROOT"):
            got = self._run(
                "getquotaroot", b"GETQUOTAROOT " + quote_mailbox("INBOX"), b"QUOTAROOT", b"QUOTA"
            )
        raw = [r for r in got[b"QUOTA"] if r]
        quotas = imap_wire.parse_quota(raw)
        if quotas is None:  # anything unusual: imapclient's general parser
            quotas = []
            for root, triples in _pairs(parse_response(raw)):
                items = list(triples)
                quotas.append((root, [
                    (_text(items[k]).upper(), int(items[k + 1]), int(items[k + 2]))
                    for k in range(0, len(items) - 2, 3)
                ]))  # fmt: skip
        resources = []
        for root, found in quotas:
            for name, usage, limit in found:
                if name == "STORAGE":
                    usage, limit = usage * 1024, limit * 1024
                resources.append(QuotaResource(_mailbox_name(root), name, usage, limit))
        notes = () if resources else ("server reports no quota limit for INBOX",)
        return tuple(resources), notes

    # ------------------------------------------------------------------ folders
    def folders(self) -> tuple[FolderInfo, ...]:
        """Every selectable folder with message count and size, using the fewest round trips."""
        with translate_errors(self.account, "folder sizes"):
            if "LIST-STATUS" in self._caps and "STATUS=SIZE" in self._caps:
                return self._folders_list_status()
            listed = self._list()
            result = []
            for name, special in listed:
                if "STATUS=SIZE" in self._caps:
                    st = self.client.folder_status(name, ["MESSAGES", "SIZE"])
                    result.append(FolderInfo(name, int(st[b"MESSAGES"]), int(st[b"SIZE"]), special))
                else:
                    result.append(self._folder_by_fetch(name, special))
            return tuple(result)

    def _list(self) -> list[tuple[str, str | None]]:
        """(name, special-use flag) of every selectable folder."""
        out = []
        for flags, _delim, name in self.client.list_folders():
            upper = {_text(f).upper() for f in flags}
            if "\\NOSELECT" in upper or "\\NONEXISTENT" in upper:
                continue
            out.append((str(name), _special(flags)))
        return out

    def _folders_list_status(self) -> tuple[FolderInfo, ...]:
        got = self._run(
            "list",
            b'LIST "" "*" RETURN (SPECIAL-USE STATUS (MESSAGES SIZE))',
            b"LIST",
            b"STATUS",
        )
        lists = [x for x in got[b"LIST"] if x not in (b"", None)]
        statuses = [x for x in got[b"STATUS"] if x not in (b"", None)]
        sizes: dict[str, tuple[int, int]] = {}
        fast = imap_wire.parse_status(statuses)
        status_items = fast if fast is not None else _pairs(parse_response(statuses))
        for raw_name, items in status_items:
            values = items if isinstance(items, dict) else dict(_pairs(items))
            sizes[_mailbox_name(raw_name)] = (
                int(values.get(b"MESSAGES", 0)),
                int(values.get(b"SIZE", 0)),
            )
        listed = imap_wire.parse_list(lists)
        if listed is None:
            parsed = parse_response(lists)
            listed = [(parsed[k], parsed[k + 2]) for k in range(0, len(parsed) - 2, 3)]
        result = []
        for flags, raw_name in listed:
            upper = {_text(f).upper() for f in flags}
            if "\\NOSELECT" in upper or "\\NONEXISTENT" in upper:
                continue
            name = _mailbox_name(raw_name)
            messages, size = sizes.get(name, (0, 0))
            if name not in sizes:  # a server may omit STATUS for some folders; ask for it directly
                st = self.client.folder_status(name, ["MESSAGES", "SIZE"])
                messages, size = int(st[b"MESSAGES"]), int(st[b"SIZE"])
            result.append(FolderInfo(name, messages, size, _special(flags)))
        return tuple(result)

    def _folder_by_fetch(self, name: str, special: str | None) -> FolderInfo:
        """Size without STATUS=SIZE: sum RFC822.SIZE fetched by UID, in chunks, read-only."""
        self._select(name, readonly=True)
        uids = sorted(self.client.search(["ALL"]))
        total = 0
        for part in chunks(uids):
            fetched = self.client.fetch(list(part), ["RFC822.SIZE"])
            total += sum(int(v[b"RFC822.SIZE"]) for v in fetched.values())
        return FolderInfo(name, len(uids), total, special)

    def _select(self, folder: str, *, readonly: bool) -> int:
        """SELECT/EXAMINE a folder (reusing the current selection when it fits); return UIDVALIDITY."""
        if self._selected == folder and (readonly or not self._selected_readonly):
            assert self._uidvalidity is not None
            return self._uidvalidity
        info = self.client.select_folder(folder, readonly=readonly)
        self._selected, self._selected_readonly = folder, readonly
        self._uidvalidity = int(info[b"UIDVALIDITY"])
        return self._uidvalidity

    # ------------------------------------------------------------------ retention
    # The operations live in imap_retention.py (imported on first use, keeping this file short).
    def select_candidates(self, folder: str, query: SearchQuery) -> FolderSelection:
        from quotawatch import imap_retention

        return imap_retention.select_candidates(self, folder, query)

    def message_meta(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> dict[int | str, MessageMeta]:
        from quotawatch import imap_retention

        return imap_retention.message_meta(self, folder, uidvalidity, uids)

    def fetch_message(self, folder: str, uidvalidity: int | None, uid: int | str) -> bytes:
        from quotawatch import imap_retention

        return imap_retention.fetch_message(self, folder, uidvalidity, uid)

    def delete(self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]) -> int:
        from quotawatch import imap_retention

        return imap_retention.delete(self, folder, uidvalidity, uids)

    def move(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str], target: str
    ) -> int:
        from quotawatch import imap_retention

        return imap_retention.move(self, folder, uidvalidity, uids, target)

    def commit(self) -> None:
        """IMAP changes are final when UID EXPUNGE / UID MOVE return."""


def _pairs(items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    items = list(items)
    for k in range(0, len(items) - 1, 2):
        yield items[k], items[k + 1]


def _mailbox_name(raw: Any) -> str:
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, bytes):
        if b"&" not in raw and raw.isascii():  # modified UTF-7 shifts only with "&"
            return raw.decode("ascii")
        return str(decode_utf7(raw))
    return str(raw)


def _special(flags: Sequence[Any]) -> str | None:
    for f in flags:
        text = _text(f)
        if text.upper() in SPECIAL_USE:
            return "\\" + text[1:].capitalize()
    return None
