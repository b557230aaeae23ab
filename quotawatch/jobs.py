"""One account's job per cycle: one login for check, stored report, plan, cleanup, then the warning hook."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from quotawatch.accounts import password_for
from quotawatch.audit import AuditLog
from quotawatch.check import snapshot
from quotawatch.config import Account, Config, Rule
from quotawatch.errors import QuotawatchError
from quotawatch.executor import CleanupResult, execute
from quotawatch.mailbox import MailboxSession, SessionFactory, open_session
from quotawatch.model import AccountReport, Snapshot
from quotawatch.planner import Plan, failed_plan
from quotawatch.retention import plan_account
from quotawatch.secrets import SecretCache
from quotawatch.state import State

log = logging.getLogger(__name__)


class WarnHook(Protocol):
    """Called after every job with the account, its report, its plan (or None), the job's ``now``
    and what the job's cleanup freed (so a warning mail shows the usage after it)."""

    def __call__(
        self,
        account: Account,
        report: AccountReport,
        plan: Plan | None,
        now: datetime,
        cleanup: CleanupResult | None = None,
    ) -> None: ...


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
            out.append(("plan", str(self.plan.error)))
        if self.cleanup is not None:
            out += [("cleanup", str(e)) for e in self.cleanup.errors]
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
    previous = state.last_report(report.name)
    data = report_data(report, now, previous[2] if previous else None, **extra)
    usage = None
    fullest = report.snapshot.fullest() if report.snapshot else None
    if fullest is not None:
        usage = (fullest.usage, fullest.limit, fullest.resource)
    state.save_report(report.name, now, report.ok, data, usage)


def _plan(
    session: MailboxSession,
    account: Account,
    rules: Mapping[str, Rule],
    snap: Snapshot,
    state: State,
    now: datetime,
) -> Plan:
    try:
        return plan_account(session, account, rules, snap, state, now)
    except Exception as exc:  # noqa: BLE001 - recorded as the plan's error, never raised
        reason = getattr(exc, "reason", "internal")
        log.warning("plan failed account=%s reason=%s: %s", account.name, reason, exc)
        return failed_plan(account.name, str(exc), snap.usage_ratio)


def _execute(
    session: MailboxSession,
    plan: Plan,
    account: Account,
    rules: Mapping[str, Rule],
    state: State,
    now: datetime,
) -> CleanupResult:
    def progress(message: str) -> None:
        log.info("cleanup account=%s %s", account.name, message)

    audit = AuditLog(state.dir / "audit.jsonl")
    try:
        return execute(session, plan, account, rules, audit, now, progress)
    except Exception as exc:
        log.error("cleanup failed account=%s: %s", account.name, exc, exc_info=exc)
        return CleanupResult(account.name, (), None, (str(exc),))


def run_account(
    account: Account,
    config: Config,
    state: State,
    secrets: SecretCache,
    *,
    cleanup: bool,
    now: datetime,
    factory: SessionFactory = open_session,
    warn: WarnHook | None = None,
) -> JobResult:
    """Check → store the report → plan (with rules) → cleanup (if asked) → warn hook; never raises."""
    started = time.monotonic()
    session: MailboxSession | None = None
    try:
        session = factory(account, password_for(account, secrets))
        snap = snapshot(session, now)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the report's error
        if session is not None:
            session.close()
        report = _failed(account, exc, started)
        if report.reason != "shutdown":
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
    plan = result = None
    try:
        _save(state, report, now)
        rules = {name: config.rules[name] for name in account.rules if name in config.rules}
        if rules:
            plan = _plan(session, account, rules, snap, state, now)
        if cleanup and plan is not None and plan.actions and not plan.error:
            result = _execute(session, plan, account, rules, state, now)
    except Exception as exc:  # e.g. the state database; the account counts as failed
        log.error("job failed account=%s: %s", account.name, exc, exc_info=exc)
        error = f"{account.name}: internal error: {type(exc).__name__}: {exc}"
        report = replace(report, error=error, reason="internal")
    finally:
        session.close()
    job = JobResult(report, plan, result)
    if plan is not None:
        done = sum(a.bytes for a in result.done) if result is not None else 0
        try:
            _save(state, report, now, pending_bytes=max(0, plan.pending_bytes - done),
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


# ---------------------------------------------------------------------- backoff
#: failures that may lock an account out (or that the server asks us to retry later)
BACKOFF_REASONS = frozenset({"auth", "temporary"})
BACKOFF_CAP = timedelta(hours=24)


def backoff_delay(failures: int, interval: timedelta, cap: timedelta = BACKOFF_CAP) -> timedelta:
    """Wait after the n-th failure in a row: 2, 4, 8 ... intervals, at most ``cap`` (24h)."""
    return max(interval, min(interval * (1 << min(failures, 32)), cap))


def fingerprint(account: Account) -> str:
    """Changes when the account's settings or its password file change, which ends a backoff."""
    parts = [account.model_dump_json()]
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    source = account.password_file or (
        Path(directory) / account.password_credential
        if directory and account.password_credential else None
    )  # fmt: skip
    if source is not None:
        try:
            parts.append(str(Path(source).stat().st_mtime_ns))
        except OSError:
            parts.append("missing")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Backoff:
    """An account's run of auth/temporary failures, kept in State so a restart does not reset it."""

    failures: int
    until: datetime
    reason: str
    fingerprint: str

    @staticmethod
    def load(state: State, account: str, current: str) -> Backoff | None:
        """The stored backoff, or None when there is none or the account has changed since."""
        raw = state.get(f"backoff:{account}")
        if not raw:
            return None
        data = json.loads(raw)
        if not data or data.get("fingerprint") != current:
            return None
        until = datetime.fromtimestamp(data["until"], UTC)
        return Backoff(int(data["failures"]), until, str(data["reason"]), current)

    def save(self, state: State, account: str) -> None:
        data = {"failures": self.failures, "until": self.until.timestamp(),
                "reason": self.reason, "fingerprint": self.fingerprint}  # fmt: skip
        state.put(f"backoff:{account}", json.dumps(data))

    @staticmethod
    def clear(state: State, account: str) -> None:
        state.put(f"backoff:{account}", "")
