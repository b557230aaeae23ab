"""Quota from doveadm for large installations: one quotaGet per Dovecot and cycle, IMAP logins only for accounts that need them."""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from quotawatch.config import Account
from quotawatch.config.fleet import DoveadmAccess
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import doveadm_key
from quotawatch.errors import ProtocolError, QuotawatchError
from quotawatch.mail.connect import open_session
from quotawatch.mail.doveadm import Quotas
from quotawatch.mail.session import SessionFactory
from quotawatch.model import AccountReport, Clock, FolderInfo, QuotaResource, Snapshot, utcnow
from quotawatch.service.directory import DoveadmFactory, open_doveadm
from quotawatch.service.jobs import JobResult, _finish, _save, check_account, report_data
from quotawatch.service.pool import per_account
from quotawatch.state import State
from quotawatch.warnings import WarnHook

log = logging.getLogger(__name__)


def doveadm_user(account: Account) -> str:
    """The Dovecot user an account watches: ``authorize_as``, else the login name without ``*master``."""
    return account.authorize_as or account.username.rsplit("*", 1)[0]


def phase(name: str) -> float:
    """A stable fraction in [0, 1) per account name, to spread first folder reads."""
    return zlib.crc32(name.encode()) / 2**32


def needs_imap(
    account: Account,
    ratio: float | None,
    folders_at: float | None,
    now: datetime,
    since: float | None = None,
) -> bool:
    """Whether a doveadm-quota account needs an IMAP login now (folders, plan, cleanup).

    Yes when its usage is at or above ``imap_when_above``, or when its folders were last read
    ``folders_every`` ago or more. Folders never read are first read at the account's own point
    within ``folders_every`` after ``since`` (its first doveadm check), so a new fleet's first
    reads are spread over that time instead of all landing in the first cycle; without
    ``since`` at once.
    """
    if ratio is not None and ratio >= account.imap_when_above:
        return True
    every = account.folders_every.total_seconds()
    if folders_at is None:
        return since is None or now.timestamp() >= since + phase(account.name) * every
    return now.timestamp() - folders_at >= every


def stored_folders(data: dict[str, Any]) -> tuple[tuple[FolderInfo, ...], float | None]:
    """The folders of a stored report and when they were read over IMAP (None: never)."""
    origin = data.get("origin") or {}
    folders = tuple(
        FolderInfo(f["name"], f["messages"], f["size_bytes"], f.get("special_use"))
        for f in data.get("folders") or ()
    )
    if origin.get("folders") == "stored":
        at = origin.get("folders_checked_at")
        return folders, datetime.fromisoformat(at).timestamp() if isinstance(at, str) else None
    if origin.get("folders") in ("imap", "pop3") and not data.get("stale"):
        return folders, data.get("checked_at")
    return folders, None


class QuotaCache:
    """Every user's quota from one doveadm call, shared by all the jobs of one cycle.

    An answer (or a failure) is kept for ``max_age`` (half the check interval), so each Dovecot
    gets one quotaGet per cycle however many accounts ask, and a dead doveadm one failed call.
    """

    def __init__(
        self,
        max_age: timedelta,
        clock: Clock = utcnow,
        doveadm_factory: DoveadmFactory = open_doveadm,
    ) -> None:
        self.max_age = max_age
        self.clock = clock
        self.doveadm_factory = doveadm_factory
        self.calls = 0
        self.last_duration: dict[str, float] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._entries: dict[str, tuple[datetime, Quotas | QuotawatchError]] = {}
        #: how many accounts read each doveadm's quota (by its settings), see :meth:`expect`
        self._users: dict[str, int] = {}

    def expect(self, users: Mapping[str, int]) -> None:
        """How many accounts read the quota of each doveadm (``doveadm_users``): the longer
        its answer may take (``QUOTA_SECONDS_PER_USER``)."""
        self._users = dict(users)

    def get(self, access: DoveadmAccess, secrets: SecretCache) -> Quotas:
        """Every user's quota; raises the doveadm error (also a cached one)."""
        key = access.model_dump_json()
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            now = self.clock()
            entry = self._entries.get(key)
            if entry is None or now - entry[0] >= self.max_age:
                entry = (now, self._fetch(access, secrets, self._users.get(key, 0)))
                self._entries[key] = entry
        if isinstance(entry[1], QuotawatchError):
            raise entry[1]
        return entry[1]

    def _fetch(
        self, access: DoveadmAccess, secrets: SecretCache, users: int
    ) -> Quotas | QuotawatchError:
        started = time.monotonic()
        self.calls += 1
        try:
            quotas = self.doveadm_factory(access, secrets).quotas(users)
        except QuotawatchError as exc:
            log.error("doveadm %s: quota of all users failed: %s", access.label, exc)
            return exc
        finally:
            self.last_duration[access.label] = time.monotonic() - started
        log.info("doveadm %s: quota of %d users in %.2fs", access.label, len(quotas),
                 self.last_duration[access.label])  # fmt: skip
        return quotas


def bulk_check(
    account: Account,
    state: State,
    quota: tuple[QuotaResource, ...] | QuotawatchError,
    now: datetime,
    warn: WarnHook | None,
    started: float,
) -> JobResult:
    """One account checked from the bulk numbers: stored report (folders kept from the last
    IMAP check), usage history, warnings; no login."""
    previous = state.last_report(account.name)
    data = previous[2] if previous else {}
    if isinstance(quota, QuotawatchError):
        report = AccountReport(account.name, account.protocol, error=str(quota),
                               reason=quota.reason, duration_seconds=time.monotonic() - started)  # fmt: skip
        _save(state, report, now)
        return _finish(JobResult(report, None, None), account, now, warn)
    folders, folders_at = stored_folders(data)
    at = datetime.fromtimestamp(folders_at, now.tzinfo) if folders_at is not None else None
    snap = Snapshot(account.name, account.protocol, now, quota, folders if at else (),
                    quota_origin="doveadm", folders_at=at or now)  # fmt: skip
    report = AccountReport(account.name, account.protocol, snapshot=snap,
                           duration_seconds=time.monotonic() - started)  # fmt: skip
    stored = report_data(report, now, data, pending_bytes=data.get("pending_bytes"))
    stored["doveadm_since"] = data.get("doveadm_since") or now.timestamp()
    fullest = snap.fullest()
    usage = (fullest.usage, fullest.limit, fullest.resource) if fullest is not None else None
    state.save_report(account.name, now, True, stored, usage)
    return _finish(JobResult(report, None, None), account, now, warn)


def doveadm_job(
    account: Account,
    quotas: QuotaCache,
    secrets: SecretCache,
    state: State,
    now: datetime,
    warn: WarnHook | None,
    imap: Callable[[], JobResult],
) -> tuple[JobResult, bool]:
    """A doveadm-quota account's job: quota from the cycle's bulk answer, ``imap()`` (the full
    pipeline) only when the account needs a login; returns the result and whether it was bulk."""
    started = time.monotonic()
    assert account.doveadm is not None, "quota_source: doveadm needs doveadm"
    try:
        quota = quota_of(account, quotas.get(account.doveadm, secrets))
    except QuotawatchError as exc:
        quota = exc
    if not isinstance(quota, QuotawatchError):
        limited = [q.usage / q.limit for q in quota if q.limit > 0]
        data = previous[2] if (previous := state.last_report(account.name)) else {}
        since = data.get("doveadm_since") or now.timestamp()
        if needs_imap(account, max(limited, default=None), stored_folders(data)[1], now, since):
            return imap(), False
    return bulk_check(account, state, quota, now, warn, started), True


def quota_of(account: Account, quotas: Quotas) -> tuple[QuotaResource, ...] | QuotawatchError:
    """The account's resources in a bulk answer, or the error saying it is missing."""
    user = doveadm_user(account)
    found = quotas.get(user)
    if found is None:
        return ProtocolError(account.name, f"doveadm lists no quota for user {user!r}")
    return found


def check_accounts(
    accounts: Sequence[Account],
    secrets: SecretCache,
    *,
    concurrency: int = 16,
    factory: SessionFactory = open_session,
    clock: Clock = utcnow,
    doveadm_factory: DoveadmFactory = open_doveadm,
) -> Iterator[AccountReport]:
    """``quotawatch check``: quota of doveadm-quota accounts from one call per Dovecot (folders
    over IMAP only at or above ``imap_when_above``), the others over IMAP/POP3; config order."""
    now = clock()
    answers: dict[str, Quotas | QuotawatchError] = {}
    access: dict[str, DoveadmAccess] = {}
    users: Counter[str] = Counter()  # accounts per doveadm: how long its answer may take
    for account in accounts:
        if account.doveadm is not None and (key := doveadm_key(account)):
            access[key] = account.doveadm
            users[key] += 1
    for key, count in users.items():
        try:
            answers[key] = doveadm_factory(access[key], secrets).quotas(count)
        except QuotawatchError as exc:
            answers[key] = exc

    def one(account: Account) -> AccountReport:
        if account.quota_source != "doveadm" or account.doveadm is None:
            return check_account(account, secrets, factory=factory, clock=clock)
        started = time.monotonic()
        answer = answers[account.doveadm.model_dump_json()]
        quota = answer if isinstance(answer, QuotawatchError) else quota_of(account, answer)
        if isinstance(quota, QuotawatchError):
            log.warning("check failed account=%s reason=%s: %s", account.name, quota.reason, quota)
            return AccountReport(account.name, account.protocol, error=str(quota),
                                 reason=quota.reason, duration_seconds=time.monotonic() - started)  # fmt: skip
        limited = [q.usage / q.limit for q in quota if q.limit > 0]
        if max(limited, default=0.0) >= account.imap_when_above:
            return check_account(account, secrets, factory=factory, clock=clock)
        note = f"folders not read: usage below imap_when_above ({account.imap_when_above:.0%})"
        snap = Snapshot(account.name, account.protocol, now, quota, (), (note,),
                        quota_origin="doveadm")  # fmt: skip
        return AccountReport(account.name, account.protocol, snapshot=snap,
                             duration_seconds=time.monotonic() - started)  # fmt: skip

    return per_account(one, accounts, concurrency, "check")
