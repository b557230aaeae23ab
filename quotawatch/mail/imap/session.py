"""The IMAP mailbox session: TLS, login modes, quota, folders with sizes, and safe UID-based changes."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import imapclient
from imapclient.imap_utf7 import decode as decode_utf7
from pydantic import SecretStr

from quotawatch.config import Account, TlsMode
from quotawatch.config.profiles import EXCHANGE
from quotawatch.errors import CapabilityMissing, CredentialsNotSent, ProtocolError, TLSError
from quotawatch.mail.imap import fallback
from quotawatch.mail.imap import wire as imap_wire
from quotawatch.mail.imap.client import GreetingClient
from quotawatch.mail.imap.errors import login_errors, translate_errors
from quotawatch.mail.imap.errors import text as _text
from quotawatch.mail.imap.gmail import GmailOps
from quotawatch.mail.imap.profiles import exchange_special_use
from quotawatch.mail.imap.syntax import chunks
from quotawatch.mail.limits import Guard
from quotawatch.mail.oauth2.sasl import MECHANISMS, Responder
from quotawatch.mail.tls import tls_context
from quotawatch.model import FolderInfo, QuotaResource, special_use

log = logging.getLogger(__name__)

GMAIL_QUOTA_NOTE = (
    "Gmail: the quota is the whole Google storage of the account (Gmail, Drive, Photos)"
)
GETQUOTAROOT = b'GETQUOTAROOT "INBOX"'
LIST_STATUS = b'LIST "" "*" RETURN (SPECIAL-USE STATUS (MESSAGES SIZE))'


class ImapSession(GmailOps):
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
        #: the account's provider profile and configured quota (Exchange: no IMAP QUOTA)
        self.profile: str | None = None
        self.configured_quota: int | None = None
        self._folders_memo: tuple[FolderInfo, ...] | None = None
        #: a LIST-STATUS answer read along with the first GETQUOTAROOT, for folders() next
        self._listed: tuple[str, str, dict[bytes, list[Any]]] | None = None
        self._first_quota = False
        imap = client._imap
        if imap.state == "NONAUTH" and (
            not client._starttls_done or getattr(imap, "read_after_starttls", False)
        ):  # what imaplib read at connect, or afresh over TLS after STARTTLS
            self._caps = frozenset(_text(c).upper() for c in imap.capabilities)
        else:
            self._refresh_capabilities()

    # ------------------------------------------------------------------ connection
    @classmethod
    def connect(
        cls, account: Account, password: SecretStr, *, job_end: float | None = None
    ) -> ImapSession:
        """Connect, secure the link as configured, log in, and re-read capabilities. Every read
        is capped and bound by ``command_timeout`` and ``job_timeout`` (the job ending at
        ``job_end``, a :func:`time.monotonic` value, when it began before this connection)."""
        name = account.name
        timeout = imapclient.SocketTimeout(connect=account.connect_timeout, read=account.timeout)
        ctx = tls_context(account.ca_file) if account.tls is not TlsMode.none else None
        with translate_errors(name, f"connect to {account.host}:{account.effective_port}"):
            client = GreetingClient(
                account.host,
                guard=Guard.for_account(account, job_end),
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
            session.profile, session.configured_quota = account.provider, account.quota
            with login_errors(name):
                session._login(account, password)
            session._refresh_capabilities()
            session._first_quota = True
            return session
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise

    def _login(self, account: Account, password: SecretStr) -> None:
        """AUTHENTICATE PLAIN (UTF-8, RFC 4616) where offered, with authzid for authorize_as;
        else LOGIN, whose strings imaplib sends as ASCII only; auth: oauth2 has its own branch."""
        if account.oauth2 is not None:
            self._oauth2_login(account, password)
            return
        secret = password.get_secret_value()
        if "AUTH=PLAIN" in self._caps and "SASL-IR" in self._caps:
            self._plain_initial_response(account.authorize_as or "", account.username, secret)
        elif "AUTH=PLAIN" in self._caps:
            self.client.plain_login(
                account.username, secret, authorization_identity=account.authorize_as or None
            )
        elif account.authorize_as:
            raise CapabilityMissing(self.account, "AUTH=PLAIN", "authorize_as")
        elif not (account.username + secret).isascii():
            raise CredentialsNotSent(
                self.account,
                "encoding: the server offers no AUTHENTICATE PLAIN and LOGIN carries only ASCII",
            )
        else:
            self.client.login(account.username, secret)

    def _plain_initial_response(self, authzid: str, username: str, secret: str) -> None:
        """``AUTHENTICATE PLAIN <response>`` in one round trip (SASL-IR, RFC 4959), which
        imaplib's authenticate() cannot send, through the lean reader (so the line also stays
        out of imaplib's in-memory log of recent commands); the capabilities the answer carries
        (an untagged CAPABILITY or the tagged OK's code) are kept for _refresh_capabilities."""
        token = base64.b64encode(f"{authzid}\0{username}\0{secret}".encode())
        imap = self.client._imap
        typ, text, got = imap_wire.command(imap, b"AUTHENTICATE PLAIN " + token, (b"CAPABILITY",))
        if typ != "OK":
            raise imapclient.exceptions.LoginError(text)
        imap.state = "AUTH"
        listed = got[b"CAPABILITY"] or imap_wire.response_code(text, b"CAPABILITY")
        if listed:
            imap.untagged_responses["CAPABILITY"] = listed[-1:]

    def _oauth2_login(self, account: Account, token: SecretStr) -> None:
        """AUTHENTICATE XOAUTH2 / OAUTHBEARER (an access token is too long for LOGIN's line)."""
        assert account.oauth2 is not None
        mech = MECHANISMS[account.oauth2.mechanism]
        if f"AUTH={mech}" not in self._caps:
            raise CapabilityMissing(self.account, f"AUTH={mech}", "auth: oauth2")
        responder = Responder(
            account.oauth2.mechanism, account.username, token, account.host, account.effective_port
        )
        self.client.sasl_login(mech, responder)  # a refusal: LoginRefused, from login_errors

    def _refresh_capabilities(self) -> None:
        """The list the login answer carried (Dovecot's tagged OK has one), else CAPABILITY."""
        client, imap = self.client, self.client._imap
        listed = imap.untagged_responses.get("CAPABILITY") if imap.state != "NONAUTH" else None
        if listed and isinstance(listed[0], bytes) and listed[0].strip():
            del imap.untagged_responses["CAPABILITY"]
            client._cached_capabilities = words = tuple(listed[0].upper().split())  # imapclient's
            self._caps = frozenset(w.decode("ascii", "replace") for w in words)
            return
        client._cached_capabilities = None
        with translate_errors(self.account, "CAPABILITY"):
            self._caps = frozenset(_text(c).upper() for c in client.capabilities())

    def capabilities(self) -> frozenset[str]:
        return self._caps

    def close(self) -> None:
        """LOGOUT (never CLOSE, which would expunge) through the lean reader; errors are ignored."""
        imap = self.client._imap
        with contextlib.suppress(Exception):
            if imap.state != "LOGOUT":
                imap.state = "LOGOUT"
                imap_wire.command(imap, b"LOGOUT", (b"BYE",))
        with contextlib.suppress(Exception):
            self.client.shutdown()

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ quota
    def quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        """All quota roots and resources of INBOX; STORAGE converted from KiB to bytes."""
        if "QUOTA" not in self._caps:
            if self.configured_quota is not None:
                return self._configured_quota()
            return (), ("server lacks QUOTA; no quota can be read",)
        pipelined = self._first_quota and self._has_list_status()
        self._first_quota = False
        with translate_errors(self.account, "GETQUOTAROOT, LIST" if pipelined else "GETQUOTAROOT"):
            if pipelined:
                got = self._quota_and_list()
            else:
                got = self._run("getquotaroot", GETQUOTAROOT, b"QUOTAROOT", b"QUOTA")
        raw = [r for r in got[b"QUOTA"] if r]
        quotas = imap_wire.parse_quota(raw)
        if quotas is None:  # anything unusual: imapclient's general parser, response by response
            quotas = []
            for root, triples in fallback.parse_pairs(self.account, "QUOTA", got[b"QUOTA"]):
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
        notes: tuple[str, ...] = () if resources else ("server reports no quota limit for INBOX",)
        if self.profile == "gmail":
            notes += (GMAIL_QUOTA_NOTE,)
        return tuple(resources), notes

    def _quota_and_list(self) -> dict[bytes, list[Any]]:
        """A session's first quota read is a check's, which reads the folders next: GETQUOTAROOT
        and LIST-STATUS go out in one write (one round trip less); the LIST-STATUS answer is
        kept for :meth:`folders` (an error in it is raised there, as without pipelining)."""
        done, got = imap_wire.pipeline(
            self.client._imap,
            (GETQUOTAROOT, LIST_STATUS),
            (b"QUOTAROOT", b"QUOTA", b"LIST", b"STATUS"),
        )
        (typ, text), (list_typ, list_text) = done
        self._listed = (list_typ, list_text, got)
        if typ != "OK":
            self.client._checkok("getquotaroot", typ, [text])
        return got

    def _configured_quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        """The account's ``quota:`` as the limit, the summed folder sizes as usage (kept for the
        next :meth:`folders` call, so a check reads them once)."""
        assert self.configured_quota is not None
        self._folders_memo = self.folders()
        used = sum(f.size_bytes for f in self._folders_memo)
        note = (
            "server offers no IMAP QUOTA: limit from the config (quota:), "
            "usage = sum of the folder sizes"
        )
        return (QuotaResource("configured", "STORAGE", used, self.configured_quota),), (note,)

    # ------------------------------------------------------------------ folders
    def folders(self) -> tuple[FolderInfo, ...]:
        """Every selectable folder with message count and size, using the fewest round trips."""
        self._first_quota = False
        if self._folders_memo is not None:
            memo, self._folders_memo = self._folders_memo, None
            return memo
        with translate_errors(self.account, "folder sizes"):
            if self._has_list_status():
                return self._folders_list_status()
            listed = self._list()
            result = []
            for name, special in listed:
                if "STATUS=SIZE" in self._caps:
                    messages, size = self._status(name)
                    result.append(FolderInfo(name, messages, size, special))
                else:
                    result.append(self._folder_by_fetch(name, special))
            return tuple(result)

    def _has_list_status(self) -> bool:
        return "LIST-STATUS" in self._caps and "STATUS=SIZE" in self._caps

    def _list(self) -> list[tuple[str, str | None]]:
        """(name, special-use flag) of every selectable folder (``LIST "" "*"`` through the
        lean reader, which takes any case, literals and extended items; imaplib would not)."""
        lists = self._run("list", b'LIST "" "*"', b"LIST")[b"LIST"]
        listed: list[tuple[Any, Any]] | None = imap_wire.parse_list(lists)
        if listed is None:
            listed = fallback.parse_list(self.account, lists)
        out = []
        for flags, raw_name in listed:
            upper = {_text(f).upper() for f in flags}
            if "\\NOSELECT" in upper or "\\NONEXISTENT" in upper:
                continue
            name = _mailbox_name(raw_name)
            out.append((name, self._special_use(flags, name)))
        return out

    def _status(self, name: str) -> tuple[int, int]:
        """(MESSAGES, SIZE) of one folder by ``STATUS`` through the lean reader."""
        line = b"STATUS " + self.client._normalise_folder(name) + b" (MESSAGES SIZE)"
        statuses = self._run("status", line, b"STATUS")[b"STATUS"]
        fast = imap_wire.parse_status(statuses)
        pairs = fast if fast is not None else fallback.parse_pairs(self.account, "STATUS", statuses)
        for _raw, items in pairs:
            values = (
                items
                if isinstance(items, dict)
                else {_text(k).upper().encode(): v for k, v in _pairs(items)}
            )
            return int(values.get(b"MESSAGES", 0)), int(values.get(b"SIZE", 0))
        raise ProtocolError(self.account, f"no STATUS answer for {name}")

    def _folders_list_status(self) -> tuple[FolderInfo, ...]:
        if self._listed is not None:
            (typ, text, got), self._listed = self._listed, None
            if typ != "OK":
                self.client._checkok("list", typ, [text])
        else:
            got = self._run("list", LIST_STATUS, b"LIST", b"STATUS")
        lists, statuses = got[b"LIST"], got[b"STATUS"]
        sizes: dict[str, tuple[int, int]] = {}
        fast = imap_wire.parse_status(statuses)
        status_items = (
            fast if fast is not None else fallback.parse_pairs(self.account, "STATUS", statuses)
        )
        for raw_name, items in status_items:
            values = (
                items
                if isinstance(items, dict)
                else {_text(k).upper().encode(): v for k, v in _pairs(items)}
            )
            sizes[_mailbox_name(raw_name)] = (
                int(values.get(b"MESSAGES", 0)),
                int(values.get(b"SIZE", 0)),
            )
        listed: list[tuple[Any, Any]] | None = imap_wire.parse_list(lists)
        if listed is None:  # a literal, extended items, ...: each response on its own
            listed = fallback.parse_list(self.account, lists)
        result = []
        for flags, raw_name in listed:
            upper = {_text(f).upper() for f in flags}
            if "\\NOSELECT" in upper or "\\NONEXISTENT" in upper:
                continue
            name = _mailbox_name(raw_name)
            messages, size = sizes.get(name, (0, 0))
            if name not in sizes:  # a server may omit STATUS for some folders; ask for it directly
                messages, size = self._status(name)
            result.append(FolderInfo(name, messages, size, self._special_use(flags, name)))
        return tuple(result)

    def _folder_by_fetch(self, name: str, special: str | None) -> FolderInfo:
        """Size without STATUS=SIZE: sum RFC822.SIZE fetched by UID, in chunks, read-only."""
        self._select(name, readonly=True, fresh=False)
        uids = sorted(self._search_line(b"ALL"))
        total = 0
        for part in chunks(uids):
            fetched = self._fetch(part, [b"RFC822.SIZE"])
            total += sum(int(v[b"RFC822.SIZE"]) for v in fetched.values())
        return FolderInfo(name, len(uids), total, special)

    def _special_use(self, flags: Sequence[Any], name: str) -> str | None:
        """The folder's special-use flag; Exchange's well-known names stand in for missing flags."""
        flag = _special(flags)
        if flag is None and self.profile in EXCHANGE:
            return exchange_special_use(name)
        return flag

    def _select(self, folder: str, *, readonly: bool, fresh: bool = True) -> tuple[int, int]:
        self._first_quota = False
        if not readonly:  # a change may follow: folder sizes read for the quota are stale
            self._folders_memo = self._listed = None
        return super()._select(folder, readonly=readonly, fresh=fresh)

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
            name = raw.decode("ascii")
            return "INBOX" if len(name) == 5 and name.upper() == "INBOX" else name
        return str(decode_utf7(raw))
    return str(raw)


def _special(flags: Sequence[Any]) -> str | None:
    """The folder's special-use flag among its LIST flags, canonically spelled."""
    return next((f for f in map(special_use, map(_text, flags)) if f is not None), None)
