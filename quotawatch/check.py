"""Check accounts: log in, read quota and folder sizes, and report each account on its own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from quotawatch.accounts import password_for
from quotawatch.config import Account
from quotawatch.errors import QuotawatchError
from quotawatch.mailbox import MailboxSession, SessionFactory, open_session
from quotawatch.model import AccountReport, Snapshot
from quotawatch.secrets import SecretCache

log = logging.getLogger(__name__)
T = TypeVar("T")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def snapshot(session: MailboxSession, now: datetime) -> Snapshot:
    """Quota and folders of a logged-in session."""
    quota, notes = session.quota()
    return Snapshot(session.account, session.protocol, now, quota, session.folders(), notes)


def check_account(
    account: Account,
    secrets: SecretCache,
    *,
    factory: SessionFactory = open_session,
    clock: Clock = utcnow,
) -> AccountReport:
    """One account's report; every failure is caught and described, never raised."""
    started = time.monotonic()
    try:
        password = password_for(account, secrets)
        session = factory(account, password)
        try:
            snap = snapshot(session, clock())
        finally:
            session.close()
    except QuotawatchError as exc:
        log.warning("check failed account=%s reason=%s: %s", account.name, exc.reason, exc)
        return AccountReport(
            account.name,
            account.protocol,
            error=str(exc),
            reason=exc.reason,
            duration_seconds=time.monotonic() - started,
        )
    except Exception as exc:
        log.exception("check failed account=%s reason=internal", account.name)
        return AccountReport(
            account.name,
            account.protocol,
            error=f"{account.name}: internal error: {type(exc).__name__}: {exc}",
            reason="internal",
            duration_seconds=time.monotonic() - started,
        )
    for note in snap.notes:
        log.info("account=%s note: %s", account.name, note)
    return AccountReport(
        account.name, account.protocol, snapshot=snap, duration_seconds=time.monotonic() - started
    )


def per_account(
    fn: Callable[[Account], T], accounts: Sequence[Account], concurrency: int, name: str
) -> Iterator[T]:
    """``fn`` of every account, in config order, up to ``concurrency`` accounts at once."""
    workers = min(concurrency, len(accounts))
    if workers <= 1:
        yield from map(fn, accounts)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        yield from pool.map(fn, accounts)


def check_accounts(
    accounts: Sequence[Account],
    secrets: SecretCache,
    *,
    concurrency: int = 16,
    factory: SessionFactory = open_session,
    clock: Clock = utcnow,
) -> Iterator[AccountReport]:
    """Reports in config order, checking up to ``concurrency`` accounts at once."""
    return per_account(
        lambda a: check_account(a, secrets, factory=factory, clock=clock),
        accounts,
        concurrency,
        "check",
    )
