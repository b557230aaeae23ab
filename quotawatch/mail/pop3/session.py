"""The POP3 mailbox session: verified TLS, UIDL identity, STAT sizes, and DELE that only QUIT commits."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import MutableMapping, Sequence
from datetime import datetime, timedelta

from pydantic import SecretStr

from quotawatch.config import DEFAULT_PORTS, Account, TlsMode
from quotawatch.errors import (
    CapabilityMissing,
    CommitUnconfirmed,
    MailboxError,
    ProtocolError,
    SafetyStop,
    TLSError,
)
from quotawatch.mail.limits import Guard, body_allowance
from quotawatch.mail.oauth2.sasl import MECHANISMS, Responder
from quotawatch.mail.pop3.wire import (
    MessageIndex,
    Pop3Client,
    build_index,
    capability_names,
    login_errors,
    parse_headers,
    translate_errors,
)
from quotawatch.mail.session import (
    Candidate,
    ClockProbe,
    FolderSelection,
    Keep,
    MessageMeta,
    SearchQuery,
)
from quotawatch.mail.tls import tls_context
from quotawatch.model import FolderInfo, QuotaResource

log = logging.getLogger(__name__)

INBOX = "INBOX"
#: TOP commands sent at once when the server offers PIPELINING (one round trip per chunk)
PIPELINE = 100


class Pop3Session:
    """One logged-in POP3 connection. ``DELE`` marks; only :meth:`commit` (QUIT) deletes.

    POP3 has no flags, so ``SearchQuery.exclude_flagged`` / ``exclude_unseen`` are ignored (the
    config refuses ``keep_flagged: true`` / ``keep_unseen: true`` in POP3 rules); the client
    guard (``quotawatch.retention.client_guard``) stands in for "unseen".
    """

    protocol = "pop3"
    #: deletions take effect at commit() (QUIT), not when delete() returns
    deferred_deletes = True

    def __init__(self, account: Account, client: Pop3Client, password: SecretStr) -> None:
        self.account = account.name
        self._config = account
        self._client = client
        self._password = password  # for quota_from_imap and the STAT after QUIT
        self._caps: frozenset[str] = frozenset()
        self._index: MessageIndex | None = None
        self._marked: set[str] = set()  # UIDLs marked with DELE in this session
        self._failed: str | None = None  # a DELE was refused: commit() must not QUIT
        self._closed = False
        self._committed = False
        #: UIDLs a delete() was asked for that were no longer on the server

    # ------------------------------------------------------------------ connection
    @classmethod
    def connect(
        cls, account: Account, password: SecretStr, *, job_end: float | None = None
    ) -> Pop3Session:
        """Connect, secure the link as configured (STLS refused before credentials), log in.
        Reads are capped and bound by ``command_timeout`` and ``job_timeout`` (see
        ``mail.limits``; ``job_end`` carries over the deadline of a job begun earlier)."""
        name = account.name
        ctx = tls_context(account.ca_file)
        implicit = ctx if account.tls is TlsMode.implicit else None
        with translate_errors(name, f"connect to {account.host}:{account.effective_port}"):
            client = Pop3Client(
                account.host,
                account.effective_port,
                account.connect_timeout,
                implicit,
                Guard.for_account(account, job_end),
            )
        try:
            with translate_errors(name, "connect"):
                client.sock.settimeout(account.timeout)
            session = cls(account, client, password)
            with translate_errors(name, "CAPA"):
                session._caps = capability_names(client.capa())
            if account.tls is TlsMode.starttls:
                if "STLS" not in session._caps:
                    raise TLSError(
                        name,
                        "server does not offer STLS; refusing to send credentials over an "
                        "unencrypted link",
                    )
                with translate_errors(name, "STLS"):
                    client.starttls(ctx)
                    session._caps = capability_names(client.capa())
            with login_errors(name):
                session._login(account, password)
            with translate_errors(name, "CAPA"):
                session._caps = capability_names(client.capa()) or session._caps
            return session
        except BaseException:
            with contextlib.suppress(Exception):
                client.close()
            raise

    def _login(self, account: Account, password: SecretStr) -> None:
        """SASL PLAIN where offered (with authzid for authorize_as), else USER/PASS."""
        if account.oauth2 is not None:  # SASL XOAUTH2 or OAUTHBEARER; refusals: login_errors
            mech = MECHANISMS[account.oauth2.mechanism]
            if f"SASL={mech}" not in self._caps:
                raise CapabilityMissing(self.account, f"SASL {mech}", "auth: oauth2")
            return self._client.auth_sasl(mech, Responder.for_account(account, password))
        secret = password.get_secret_value()
        if "SASL=PLAIN" in self._caps:
            self._client.auth_plain(account.username, secret, account.authorize_as or "")
        elif account.authorize_as:
            raise CapabilityMissing(self.account, "SASL PLAIN", "authorize_as")
        else:
            self._client.user(account.username)
            self._client.pass_(secret)

    def capabilities(self) -> frozenset[str]:
        return self._caps

    def commit(self) -> None:
        """QUIT: the server deletes every message marked with DELE. Refused after a failed DELE.

        A QUIT without its ``+OK`` (link lost, ``-ERR``) raises CommitUnconfirmed: the server may
        have deleted some or all marked messages; the next session reconciles them by UIDL.
        """
        self._live()
        if self._failed is not None:
            raise SafetyStop(self.account, f"not sending QUIT after a refused DELE: {self._failed}")
        try:
            with translate_errors(self.account, "QUIT"):
                self._client.short("QUIT")
        except MailboxError as exc:  # sent (or maybe sent): only the server knows what it did
            raise CommitUnconfirmed(self.account, "QUIT", exc.detail) from None
        finally:
            self._closed = True
            with contextlib.suppress(Exception):
                self._client.close()
        self._committed = True

    def close(self) -> None:
        """Drop the connection WITHOUT QUIT, so no message marked for deletion is deleted."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.close()
        if self._marked:
            log.info(
                "account=%s: closed without QUIT; the server keeps every message", self.account
            )

    def __enter__(self) -> Pop3Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ quota and size
    def _stat(self) -> tuple[int, int]:
        """STAT; after commit() on a new connection, so the result shows what QUIT deleted."""
        if self._committed:
            job_end = self._client.guard.job_end
            with Pop3Session.connect(self._config, self._password, job_end=job_end) as fresh:
                return fresh._stat()
        with translate_errors(self.account, "STAT"):
            return self._live().stat()

    def quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        """The configured quota with INBOX octets from STAT as usage, or the quota read over IMAP."""
        if self._config.quota_from_imap:
            return self._imap_quota()
        if self._config.quota is None:
            return (), ("POP3 cannot ask the server for a quota and none is configured",)
        _count, octets = self._stat()
        note = "POP3 has no quota command: limit from the config, usage = INBOX size (STAT)"
        return (QuotaResource("configured", "STORAGE", octets, self._config.quota),), (note,)

    def _imap_quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        from quotawatch.mail.imap.session import ImapSession

        acct = self._config
        port = acct.imap_port or DEFAULT_PORTS[("imap", acct.tls)]
        imap_account = acct.model_copy(update={"protocol": "imap", "port": port})
        where = f"IMAP {acct.host}:{port}"
        try:
            job_end = self._client.guard.job_end
            with ImapSession.connect(imap_account, self._password, job_end=job_end) as session:
                resources, notes = session.quota()
        except CapabilityMissing:
            raise
        except MailboxError as exc:
            raise type(exc)(self.account, f"reading the quota over {where}: {exc.detail}") from None
        return resources, (f"quota read over {where} (quota_from_imap)", *notes)

    def folders(self) -> tuple[FolderInfo, ...]:
        """POP3 sees one folder: INBOX, with count and octets from STAT."""
        count, octets = self._stat()
        return (FolderInfo(INBOX, count, octets, None),)

    # ------------------------------------------------------------------ identity
    def _messages(self, *, fresh: bool = False) -> MessageIndex:
        """UIDL -> (number, size) of the INBOX, from UIDL and LIST (cached unless ``fresh``)."""
        if self._index is None or fresh:
            self._index = self._read_index()
        if not self._marked or self._index.problem is not None:
            return self._index
        live = {u: v for u, v in self._index.by_uidl.items() if u not in self._marked}
        return MessageIndex(live)

    def _live(self) -> Pop3Client:
        """The connection, or ProtocolError once commit() or close() ended it."""
        if self._closed:
            raise ProtocolError(self.account, "the POP3 connection is already closed")
        return self._client

    def _read_index(self) -> MessageIndex:
        self._live()
        with translate_errors(self.account, "LIST"):
            listed = self._client.long("LIST")
        try:
            with translate_errors(self.account, "UIDL"):
                uidls = self._client.long("UIDL")
        except ProtocolError as exc:
            index = MessageIndex(problem=f"the server does not support UIDL ({exc.detail})")
        else:
            index = build_index(uidls, listed)
        if index.problem is not None:
            log.warning("account=%s: read-only: %s", self.account, index.problem)
        return index

    def _inbox(self, folder: str) -> None:
        if folder.upper() != INBOX:
            raise ProtocolError(self.account, f"POP3 has only INBOX, not {folder!r}")

    # ------------------------------------------------------------------ retention
    def select_candidates(self, folder: str, query: SearchQuery) -> FolderSelection:
        """Messages by UIDL with LIST sizes; ``larger_than`` applied here, age as the query says.

        ``age: saved`` returns every message with ``date=None`` and ``age_applied=False``: the
        caller dates them by first-seen records. ``age: sent`` reads the Date header with
        ``TOP n 0`` (only for messages passing the size filter); no parseable Date, no candidate.
        """
        self._inbox(folder)
        if query.age not in ("saved", "sent"):
            raise ProtocolError(self.account, f"age: {query.age} has no meaning for POP3")
        index = self._messages()
        if index.problem is not None:
            note = f"POP3 mailbox is read-only, nothing is selected: {index.problem}"
            return FolderSelection(INBOX, None, self._stat()[0], (), notes=(note,))
        items = sorted(index.by_uidl.items(), key=lambda kv: kv[1][0])
        all_uids = tuple(uidl for uidl, _ in items)
        if query.larger_than is not None:
            items = [kv for kv in items if kv[1][1] > query.larger_than]
        if query.age == "saved":
            found = tuple(Candidate(uidl, size, None) for uidl, (_n, size) in items)
            return FolderSelection(
                INBOX, None, len(all_uids), found, age_applied=False, all_uids=all_uids
            )
        if "TOP" not in self._caps:
            raise CapabilityMissing(self.account, "TOP", "age: sent")
        headers = self._headers([number for _uidl, (number, _size) in items])
        candidates = []
        for uidl, (number, size) in items:
            date = headers[number][1]
            if date is None or (query.before is not None and date >= query.before):
                continue
            candidates.append(Candidate(uidl, size, date))
        return FolderSelection(
            INBOX, None, len(all_uids), tuple(candidates), age_applied=True, all_uids=all_uids
        )

    def _headers(self, numbers: Sequence[int]) -> dict[int, tuple[str | None, datetime | None]]:
        """Message-ID and Date of each message by ``TOP n 0``, pipelined where the server allows."""
        client = self._live()
        out: dict[int, tuple[str | None, datetime | None]] = {}
        step = PIPELINE if "PIPELINING" in self._caps else 1
        for start in range(0, len(numbers), step):
            chunk = numbers[start : start + step]
            with translate_errors(self.account, f"TOP {chunk[0]} 0"):
                answers = client.long_many([f"TOP {n} 0" for n in chunk])
            for number, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, Exception):
                    with translate_errors(self.account, f"TOP {number} 0"):
                        raise answer
                out[number] = parse_headers(answer)
        return out

    def message_meta(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> dict[int | str, MessageMeta]:
        """Size from LIST; Message-ID and Date (as ``internaldate``) from ``TOP n 0``."""
        self._inbox(folder)
        index = self._messages()
        found = {uid: index.by_uidl[str(uid)] for uid in uids if str(uid) in index.by_uidl}
        top = "TOP" in self._caps
        headers = self._headers([number for number, _size in found.values()]) if top else {}
        return {
            uid: MessageMeta(uid, size, *headers.get(number, (None, None)))
            for uid, (number, size) in found.items()
        }

    def fetch_message(self, folder: str, uidvalidity: int | None, uid: int | str) -> bytes:
        """The whole message by RETR, with CRLF line ends as the server sent it."""
        self._inbox(folder)
        entry = self._messages().by_uidl.get(str(uid))
        if entry is None:
            raise ProtocolError(self.account, f"message {uid} is no longer on the server")
        with translate_errors(self.account, f"RETR {entry[0]}"):
            lines = self._live().long(f"RETR {entry[0]}", body_allowance(entry[1]))
        return b"".join(line + b"\r\n" for line in lines)

    def delete(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        """Mark these UIDLs with DELE (effective only at commit); return how many were marked.
        POP3 has no flags: ``keep`` has nothing to re-check.

        The UIDL list is read again first: UIDLs gone meanwhile (another client deleted them) are
        left out, with why in ``kept``. A refused DELE raises and blocks commit().
        """
        self._inbox(folder)
        index = self._messages(fresh=True)
        if index.problem is not None:
            raise SafetyStop(self.account, f"POP3 mailbox is read-only: {index.problem}")
        wanted = [str(u) for u in uids if str(u) not in self._marked]
        gone = [u for u in wanted if u not in index.by_uidl]
        if gone:
            if kept is not None:
                kept.update(dict.fromkeys(gone, "no longer on the server (another client)"))
            log.warning(
                "account=%s: %d message(s) of the plan are no longer on the server; skipped",
                self.account,
                len(gone),
            )
        marked = 0
        for uidl in wanted:
            if uidl not in index.by_uidl:
                continue
            number = index.by_uidl[uidl][0]
            self._marked.add(uidl)  # before sending: an unanswered DELE may have been applied
            try:
                with translate_errors(self.account, f"DELE {number}"):
                    self._client.dele(number)
            except MailboxError as exc:
                self._failed = str(exc)
                raise
            marked += 1
        return marked

    def move(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        target: str,
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        raise ProtocolError(self.account, "POP3 has no folders to move messages to")

    def marked_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> set[int | str]:
        """POP3 has no flags; a DELE never outlives its session."""
        return set()

    def unmark_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> None:
        """Nothing to take off: POP3 has no flags."""

    def clock_probe(
        self,
        folder: str,
        now: datetime,
        slack: timedelta,
        sample: tuple[int | str, datetime] | None = None,
    ) -> ClockProbe | None:
        """POP3 shows no server time: the caller judges the clock by its own records."""
        return None
