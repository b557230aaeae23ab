"""The stop switch for running jobs: sessions that refuse further commands once the daemon stops."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping, Sequence
from datetime import datetime, timedelta

from pydantic import SecretStr

from quotawatch.config import Account
from quotawatch.errors import ShuttingDown
from quotawatch.mail.session import (
    ClockProbe,
    FolderSelection,
    Keep,
    MailboxSession,
    MessageMeta,
    SearchQuery,
    SessionFactory,
)
from quotawatch.model import FolderInfo, QuotaResource


class SessionRegistry:
    """The open sessions of all jobs, and the stop switch that makes them refuse further commands."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[int, str] = {}

    def factory(self, inner: SessionFactory) -> SessionFactory:
        def make(account: Account, password: SecretStr) -> MailboxSession:
            if self.stopping.is_set():
                raise ShuttingDown(account.name)
            session = GuardedSession(inner(account, password), self)
            with self._lock:
                self._open[id(session)] = account.name
            return session

        return make

    def closed(self, session: GuardedSession) -> None:
        with self._lock:
            self._open.pop(id(session), None)

    def busy(self) -> list[str]:
        with self._lock:
            return sorted(self._open.values())

    def stop(self) -> None:
        self.stopping.set()


class GuardedSession:
    """A session that sends nothing once the daemon stops, except the final LOGOUT (never CLOSE)."""

    def __init__(self, inner: MailboxSession, registry: SessionRegistry) -> None:
        self.inner = inner
        self.registry = registry
        self.account = inner.account
        self.protocol = inner.protocol
        self.deferred_deletes: bool = bool(getattr(inner, "deferred_deletes", False))

    def _go(self) -> MailboxSession:
        if self.registry.stopping.is_set():
            raise ShuttingDown(self.account)
        return self.inner

    def capabilities(self) -> frozenset[str]:
        return self._go().capabilities()

    def quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        return self._go().quota()

    def folders(self) -> tuple[FolderInfo, ...]:
        return self._go().folders()

    def select_candidates(self, folder: str, query: SearchQuery) -> FolderSelection:
        return self._go().select_candidates(folder, query)

    def message_meta(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> dict[int | str, MessageMeta]:
        return self._go().message_meta(folder, uidvalidity, uids)

    def fetch_message(self, folder: str, uidvalidity: int | None, uid: int | str) -> bytes:
        return self._go().fetch_message(folder, uidvalidity, uid)

    def delete(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        return self._go().delete(folder, uidvalidity, uids, keep, kept)

    def move(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        target: str,
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        return self._go().move(folder, uidvalidity, uids, target, keep, kept)

    def clock_probe(
        self,
        folder: str,
        now: datetime,
        slack: timedelta,
        sample: tuple[int | str, datetime] | None = None,
    ) -> ClockProbe | None:
        return self._go().clock_probe(folder, now, slack, sample)

    def marked_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> set[int | str]:
        return self._go().marked_deleted(folder, uidvalidity, uids)

    def unmark_deleted(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> None:
        self._go().unmark_deleted(folder, uidvalidity, uids)

    def commit(self) -> None:
        self._go().commit()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.registry.closed(self)
