"""The one small interface to a mailbox, whatever the protocol: the session Protocol and its plain data."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import SecretStr

from quotawatch.config import Account
from quotawatch.model import FolderInfo, QuotaResource


@dataclass(frozen=True)
class SearchQuery:
    """Server-side selection of retention candidates in one folder.

    ``before`` is compared with the date named by ``age``: ``saved`` (time in this folder),
    ``received`` (INTERNALDATE) or ``sent`` (Date header). ``None`` means no age limit.
    ``older`` asks the server's own clock as well (IMAP WITHIN ``OLDER``, on INTERNALDATE) where
    it offers that: a message younger than this on arrival by the server's clock is no candidate.
    """

    before: datetime | None = None
    age: str = "saved"
    larger_than: int | None = None
    exclude_flagged: bool = True
    exclude_unseen: bool = False
    older: timedelta | None = None
    #: also read what the audit log records of each candidate (Candidate.meta), so that a
    #: cleanup in the same session need not fetch it again (IMAP; others ignore it)
    audit: bool = False


@dataclass(frozen=True)
class MessageMeta:
    """What the audit log records of a message."""

    uid: int | str
    size: int
    message_id: str | None
    internaldate: datetime | None


@dataclass(frozen=True)
class Candidate:
    """A message that matched a SearchQuery; ``uid`` is an IMAP UID or a POP3 UIDL."""

    uid: int | str
    size: int
    date: datetime | None
    #: the message's CONDSTORE mod-sequence when it was selected (None: the server keeps none)
    modseq: int | None = None
    #: when it arrived (INTERNALDATE; POP3: first seen), for ``keep_newer_than``; None: unknown
    arrived: datetime | None = None
    #: what the audit log records of it, read with the candidates (SearchQuery.audit)
    meta: MessageMeta | None = None


@dataclass(frozen=True)
class FolderSelection:
    """The candidates of one folder at one UIDVALIDITY, with the folder's total message count."""

    folder: str
    uidvalidity: int | None
    total_messages: int
    candidates: tuple[Candidate, ...]
    #: True when ``before`` was applied by the server to the requested date (SAVEDATE, INTERNALDATE);
    #: False when the caller must decide age itself (first-seen records)
    age_applied: bool = True
    all_uids: tuple[int | str, ...] = ()
    #: why nothing (or less) could be selected, e.g. a POP3 mailbox without usable UIDLs
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Keep:
    """What must still hold when a planned message is removed, else it stays where it is: the
    rule's protections, re-checked on the server, and each UID's mod-sequence at planning time
    (CONDSTORE), which any later change to the message raises."""

    flagged: bool = False
    unseen: bool = False
    modseqs: Mapping[int | str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ClockProbe:
    """The server's clock measured on one message: its arrival ``stamp`` (INTERNALDATE, set by the
    server's clock) and, where the server offers WITHIN, how the server itself judged the local
    clock: ``ahead``/``behind`` by more than the slack asked for (None: not asked)."""

    stamp: datetime
    ahead: bool | None = None
    behind: bool | None = None


class MailboxSession(Protocol):
    """What the planner, executor and checks need from a logged-in mailbox."""

    account: str
    protocol: str
    #: False when delete() is final on return (IMAP UID EXPUNGE); True when deletions take
    #: effect only at commit() (POP3 DELE, applied at QUIT)
    deferred_deletes: bool

    def capabilities(self) -> frozenset[str]: ...

    def quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        """Quota resources and notes (e.g. "server lacks QUOTA")."""
        ...

    def folders(self) -> tuple[FolderInfo, ...]: ...

    def select_candidates(self, folder: str, query: SearchQuery) -> FolderSelection: ...

    def message_meta(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> dict[int | str, MessageMeta]: ...

    def fetch_message(self, folder: str, uidvalidity: int | None, uid: int | str) -> bytes: ...

    def delete(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        """Remove exactly these messages, except those ``keep`` protects now; return how many were
        removed. Each UID left in place because of ``keep`` is entered in ``kept`` with why."""
        ...

    def move(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        target: str,
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int: ...

    def marked_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> set[int | str]:
        """Those of ``uids`` that carry ``\\Deleted`` (POP3 has no flags: none)."""
        ...

    def unmark_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> None:
        """Take ``\\Deleted`` off exactly these messages (POP3: nothing to do)."""
        ...

    def clock_probe(
        self,
        folder: str,
        now: datetime,
        slack: timedelta,
        sample: tuple[int | str, datetime] | None = None,
    ) -> ClockProbe | None:
        """The server's view of the time on one message of ``folder``; None if it has none.
        ``sample``: (UID, INTERNALDATE) of a message of ``folder`` the caller just read, which
        a server with WITHIN can judge the clock on without looking for its newest message."""
        ...

    def commit(self) -> None:
        """Make deletions final (POP3: QUIT); a no-op where deletions are immediate."""
        ...

    def close(self) -> None:
        """Log out; never expunges anything."""
        ...


SessionFactory = Callable[[Account, SecretStr], MailboxSession]
