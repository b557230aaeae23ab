"""The one account pipeline, for the CLI and the daemon alike: log in once, check, store the
report, plan, clean up, log out, then the warning hook."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from quotawatch.config import Account, Config, Rule
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import MailboxLocked, QuotawatchError, StateError
from quotawatch.mail.connect import open_session
from quotawatch.mail.oauth2.renew import open_account
from quotawatch.mail.session import MailboxSession, SessionFactory
from quotawatch.mail.snapshot import snapshot
from quotawatch.model import AccountReport, Clock, Snapshot, utcnow
from quotawatch.service.lock import MailboxLock
from quotawatch.service.pool import per_account
from quotawatch.state import State
from quotawatch.warnings import WarnHook

if TYPE_CHECKING:  # imported where used: a check (the CLI's, or without rules) needs none
    from quotawatch.retention.audit import AuditLog
    from quotawatch.retention.journal import Journal
    from quotawatch.retention.planner import Plan
    from quotawatch.retention.results import CleanupResult

Progress = Callable[[str], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """What one account's job did: the check report, the plan (if rules apply), the cleanup (if run)."""

    report: AccountReport
    plan: Plan | None
    cleanup: CleanupResult | None

    @property
    def failures(self) -> tuple[tuple[str, str], ...]:
        """(reason, message) for every step that failed."""
        out: list[tuple[str, str]] = []
        if self.report.error is not None:
            out.append((self.report.reason or "internal", self.report.error))
        if self.plan is not None and self.plan.error:
            out.append((self.plan.reason or "plan", str(self.plan.error)))
        if self.cleanup is not None:
            out += [(self.cleanup.reason, str(e)) for e in self.cleanup.errors]
        return tuple(out)

    @property
    def ok(self) -> bool:
        return not self.failures


def _failed(account: Account, exc: BaseException, started: float) -> AccountReport:
    if isinstance(exc, QuotawatchError):
        error, reason = str(exc), exc.reason
    else:
        error, reason = f"{account.name}: internal error: {type(exc).__name__}: {exc}", "internal"
    return AccountReport(
        account.name, account.protocol, error=error, reason=reason,
        duration_seconds=time.monotonic() - started,
    )  # fmt: skip


def _log_failed(account: Account, exc: BaseException, reason: str) -> None:
    """Internal errors with their traceback; the one-line warning of others is the caller's."""
    if reason == "internal":
        log.error("check failed account=%s reason=internal", account.name, exc_info=exc)
    elif reason == "shutdown":
        log.info("check interrupted account=%s: the daemon is stopping", account.name)


def report_data(
    report: AccountReport,
    now: datetime,
    previous: Mapping[str, Any] | None,
    pending_bytes: int | None = None,
    job_errors: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The stored form of a report: ``check --json`` plus what the metrics need.

    A failed check keeps the last known quota, folders and pending bytes (marked ``stale``) so
    that usage alerts do not flap while a server is unreachable.
    """
    data = report.to_json()
    prev = previous or {}
    data["checked_at"] = now.timestamp()
    data["duration_seconds"] = round(report.duration_seconds, 3)
    data["last_success"] = now.timestamp() if report.ok else prev.get("last_success")
    data["pending_bytes"] = pending_bytes
    data["job_errors"] = list(job_errors)
    if not report.ok and prev.get("quota"):
        for key in ("quota", "folders", "usage_ratio", "pending_bytes"):
            data[key] = prev.get(key)
        data["stale"] = True
    return data


def _save(state: State, report: AccountReport, now: datetime, **extra: Any) -> None:
    previous = None if report.ok else state.last_report(report.name)  # only a failure keeps any
    data = report_data(report, now, previous[2] if previous else None, **extra)
    usage = None
    fullest = report.snapshot.fullest() if report.snapshot else None
    if fullest is not None:
        usage = (fullest.usage, fullest.limit, fullest.resource)
    state.save_report(report.name, now, report.ok, data, usage)


#: a plan that fails for one of these keeps it as its reason (the server misbehaved, the link
#: or the clock failed); any other failure while planning is reason ``plan``
PLAN_REASONS = frozenset({"clock", "protocol", "timeout", "connect", "tls", "temporary"})


def _plan(
    session: MailboxSession,
    account: Account,
    rules: Mapping[str, Rule],
    snap: Snapshot,
    state: State,
    now: datetime,
    explain: bool,
    apply: bool,
) -> Plan:
    from quotawatch.retention.planner import failed_plan
    from quotawatch.retention.rules import plan_account

    try:
        return plan_account(session, account, rules, snap, state, now, explain=explain, apply=apply)
    except Exception as exc:  # noqa: BLE001 - recorded as the plan's error, never raised
        reason = getattr(exc, "reason", "internal")
        log.warning("plan failed account=%s reason=%s: %s", account.name, reason, exc)
        return failed_plan(
            account.name, str(exc), snap.usage_ratio, reason if reason in PLAN_REASONS else "plan"
        )


def _execute(
    session: MailboxSession,
    plan: Plan,
    account: Account,
    rules: Mapping[str, Rule],
    journal: Journal,
    now: datetime,
    progress: Progress | None,
    snap: Snapshot,
) -> CleanupResult | None:
    """Settle what an interrupted earlier run left open, then carry out the plan (if it may run).
    The check's quota, read moments before, is the cleanup's "before" (no second GETQUOTAROOT)."""
    from quotawatch.retention.executor import execute
    from quotawatch.retention.reconcile import reconcile
    from quotawatch.retention.results import CleanupResult

    def to_log(message: str) -> None:
        log.info("cleanup account=%s %s", account.name, message)

    try:
        reconciled = reconcile(session, journal, plan)
        if not plan.actions or plan.error:
            return None
        result = execute(
            session, plan, account, rules, journal, now, progress or to_log, quota=snap.quota
        )
        return replace(result, reconciled=reconciled) if reconciled else result
    except StateError as exc:
        log.error("cleanup failed account=%s reason=state: %s", account.name, exc)
        return CleanupResult(account.name, (), None, (str(exc),), reason="state")
    except Exception as exc:
        log.error("cleanup failed account=%s: %s", account.name, exc, exc_info=exc)
        return CleanupResult(account.name, (), None, (str(exc),))


def account_rules(account: Account, config: Config) -> dict[str, Rule]:
    """The rules an account names, in its order (unknown names were refused by the config)."""
    return {name: config.rules[name] for name in account.rules if name in config.rules}


def run_account(
    account: Account,
    config: Config,
    state: State | None,
    secrets: SecretCache,
    *,
    cleanup: bool,
    now: datetime,
    factory: SessionFactory = open_session,
    warn: WarnHook | None = None,
    plan: bool = True,
    progress: Progress | None = None,
    explain: bool = False,
    audit: AuditLog | None = None,
) -> JobResult:
    """Check → store the report → plan (with rules) → cleanup (if asked) → warn hook; never raises.

    Without ``state`` (a plain ``check``) nothing is stored and nothing planned; ``plan=False``
    stops after the check. ``progress`` receives cleanup progress lines (default: the log);
    ``explain`` adds why a rule selected nothing (CLI ``plan``/``cleanup``; costs a search).

    One worker per mailbox: with ``state`` the whole job, warning included, holds the mailbox's
    lock (:mod:`quotawatch.service.lock`). A job that cannot get it within
    ``schedule.lock_wait`` is skipped with reason ``locked``: nothing stored, planned or sent,
    since the worker holding the lock does all of that. A plain check takes no lock: it changes
    and stores nothing.
    """
    job = partial(
        _run_account, account, config, state, secrets, cleanup=cleanup, now=now,
        factory=factory, warn=warn, plan=plan, progress=progress, audit=audit, explain=explain,
    )  # fmt: skip
    if state is None:
        return job()
    started, lock = time.monotonic(), MailboxLock(state.dir, account)
    try:
        lock.acquire(config.schedule.lock_wait.total_seconds())
    except (MailboxLocked, StateError) as exc:
        report = _failed(account, exc, started)
        log.warning("skipped account=%s reason=%s: %s", account.name, exc.reason, report.error)
        return JobResult(report, None, None)
    try:
        return job()
    finally:
        lock.release()


def _run_account(
    account: Account,
    config: Config,
    state: State | None,
    secrets: SecretCache,
    *,
    cleanup: bool,
    now: datetime,
    factory: SessionFactory,
    warn: WarnHook | None,
    plan: bool,
    progress: Progress | None,
    audit: AuditLog | None,
    explain: bool,
) -> JobResult:
    started = time.monotonic()
    session: MailboxSession | None = None
    try:
        session = open_account(account, secrets, factory)
        snap = snapshot(session, now)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the report's error
        if session is not None:
            session.close()
        report = _failed(account, exc, started)
        if report.reason != "shutdown" and state is not None:
            try:
                _save(state, report, now)
            except Exception as db_exc:  # noqa: BLE001
                log.error("cannot store the report account=%s: %s", account.name, db_exc)
        _log_failed(account, exc, str(report.reason))
        return _finish(JobResult(report, None, None), account, now, warn)
    report = AccountReport(
        account.name, account.protocol, snapshot=snap, duration_seconds=time.monotonic() - started
    )
    for note in snap.notes:
        log.debug("account=%s note: %s", account.name, note)
    the_plan = result = None
    try:
        if state is not None:
            _save(state, report, now)
            rules = account_rules(account, config)
            if plan and rules:
                the_plan = _plan(session, account, rules, snap, state, now, explain, cleanup)
            if cleanup and the_plan is not None:
                from quotawatch.retention.audit import AuditLog
                from quotawatch.retention.journal import Journal
                from quotawatch.retention.results import after_cleanup

                journal = Journal(audit or AuditLog(state.dir / "audit.jsonl"))
                result = _execute(session, the_plan, account, rules, journal, now, progress, snap)
                report = replace(report, snapshot=after_cleanup(snap, result))
    except Exception as exc:  # e.g. the state database; the account counts as failed
        log.error("job failed account=%s: %s", account.name, exc, exc_info=exc)
        error = f"{account.name}: internal error: {type(exc).__name__}: {exc}"
        report = replace(report, error=error, reason="internal")
    finally:
        session.close()
    job = JobResult(report, the_plan, result)
    if the_plan is not None and state is not None:
        done = sum(a.bytes for a in result.done) if result is not None else 0
        try:
            _save(state, report, now, pending_bytes=max(0, the_plan.pending_bytes - done),
                  job_errors=tuple(msg for _, msg in job.failures))  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            log.error("cannot store the plan account=%s: %s", account.name, exc)
    return _finish(job, account, now, warn)


def _finish(job: JobResult, account: Account, now: datetime, warn: WarnHook | None) -> JobResult:
    if warn is not None and job.report.reason != "shutdown":
        try:
            warn(account, job.report, job.plan, now, cleanup=job.cleanup)
        except Exception as exc:
            log.error("warning hook failed account=%s: %s", account.name, exc, exc_info=exc)
    return job


# ---------------------------------------------------------------------- the CLI's views of it
def check_account(
    account: Account,
    secrets: SecretCache,
    *,
    factory: SessionFactory = open_session,
    clock: Clock = utcnow,
) -> AccountReport:
    """``quotawatch check`` of one account: the pipeline's check, nothing stored or planned."""
    report = run_account(
        account, Config(), None, secrets, cleanup=False, now=clock(), factory=factory, plan=False
    ).report
    if report.error is not None and report.reason not in ("internal", "shutdown"):
        log.warning(
            "check failed account=%s reason=%s: %s", account.name, report.reason, report.error
        )
    for note in report.snapshot.notes if report.snapshot else ():
        log.info("account=%s note: %s", account.name, note)
    return report


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


def cleanup_account(
    account: Account,
    config: Config,
    state: State,
    audit: AuditLog,
    secrets: SecretCache,
    *,
    apply: bool,
    now: datetime,
    factory: SessionFactory = open_session,
    progress: Progress | None = None,
) -> tuple[Plan, CleanupResult | None]:
    """``plan`` / ``cleanup --apply`` of one account: the pipeline, as (plan, cleanup result).

    A plan that may not run (a safety cap) is reported as a refused cleanup when applying."""
    from quotawatch.retention.planner import Plan, failed_plan
    from quotawatch.retention.results import CleanupResult

    job = run_account(
        account, config, state, secrets, cleanup=apply, now=now, factory=factory,
        progress=progress, audit=audit, explain=True,
    )  # fmt: skip
    usage = job.report.snapshot.usage_ratio if job.report.snapshot else None
    if job.report.error is not None and job.plan is None:
        log.warning(
            "retention failed account=%s reason=%s: %s",
            account.name, job.report.reason, job.report.error,
        )  # fmt: skip
        return failed_plan(account.name, job.report.error, usage), None
    the_plan = job.plan or Plan(account.name, usage, usage, ())
    result = job.cleanup
    if apply and result is None and the_plan.error:
        refused = f"{account.name}: cleanup refused: {the_plan.error}"
        result = CleanupResult(account.name, (), None, (refused,))
    return the_plan, result


def cleanup_accounts(
    accounts: Sequence[Account],
    config: Config,
    state: State,
    audit: AuditLog,
    secrets: SecretCache,
    *,
    apply: bool,
    now: datetime,
    factory: SessionFactory = open_session,
    progress: Progress | None = None,
) -> Iterator[tuple[Plan, CleanupResult | None]]:
    """Results in config order, running up to ``schedule.concurrency`` accounts at once."""

    def one(account: Account) -> tuple[Plan, CleanupResult | None]:
        return cleanup_account(
            account, config, state, audit, secrets,
            apply=apply, now=now, factory=factory, progress=progress,
        )  # fmt: skip

    return per_account(one, accounts, config.schedule.concurrency, "cleanup")
