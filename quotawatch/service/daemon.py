"""The daemon: one APScheduler job per account, backoff, SIGHUP reload, clean stop, and ``run --once``."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from quotawatch.config import Account, Config, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import AccountTable, doveadm_users
from quotawatch.errors import ConfigError
from quotawatch.mail.connect import open_session
from quotawatch.mail.oauth2.signin import refresh_lapses
from quotawatch.mail.oauth2.tokens import TokenBroker, secret_cache
from quotawatch.mail.session import SessionFactory
from quotawatch.model import Clock, utcnow
from quotawatch.service.backoff import BACKOFF_REASONS, Backoff, backoff_delay, fingerprint
from quotawatch.service.directory import Directory, DoveadmFactory, open_doveadm
from quotawatch.service.fleet import QuotaCache, doveadm_job
from quotawatch.service.fleet_metrics import Cycles, RuntimeInfo
from quotawatch.service.jobs import JobResult, run_account
from quotawatch.service.metrics import Counters, Histogram, StateCollector
from quotawatch.service.pacing import adaptive, delay_after
from quotawatch.service.stop import SessionRegistry
from quotawatch.state import State
from quotawatch.units import format_percent
from quotawatch.warnings import WarnHook, warn_hook

log = logging.getLogger(__name__)

#: seconds a stop waits for running jobs to log out; the unit's TimeoutStopSec (30s) is longer
STOP_GRACE = 20.0
#: builds the warning hook for a config (None: no warnings configured)
WarnFactory = Callable[[Config, State, SecretCache, Counters], WarnHook | None]
#: the job that re-reads due account sources (":" cannot occur in an account name)
SOURCES_JOB = ":sources"
#: how often that job looks whether a source is due
SOURCES_EVERY = 60
#: triggers shared by the jobs of one start-up or reload: (seconds, start, jitter) -> (trigger,
#: first run)
Triggers = dict[tuple[float, datetime, int | None], tuple[IntervalTrigger, datetime | None]]


@dataclass(frozen=True)
class Runtime:
    """One loaded config: swapped as a whole on reload, so a job sees one consistent version."""

    config: Config
    accounts: Mapping[str, Account]  # an AccountTable: compact, builds an Account per lookup
    secrets: SecretCache
    warn: WarnHook | None = None
    #: (source label, number of accounts) in the order of ``accounts`` (the source metrics)
    spans: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of_table(cls, config: Config, table: AccountTable, secrets: SecretCache) -> Runtime:
        return cls(config, table, secrets, spans=tuple(table.spans))

    def groups(self) -> Iterator[tuple[str, str, str]]:
        """(account, source label, host) of every account, without a map kept per account."""
        accounts = iter(self.accounts.values())
        for label, count in self.spans:
            for account in islice(accounts, count):
                yield account.name, label, account.host


class Daemon:
    """Schedules every account's job: ``start`` → ``reload``* → ``stop``; or ``start(once=True)``."""

    def __init__(
        self,
        config_path: str,
        *,
        factory: SessionFactory = open_session,
        clock: Clock = utcnow,
        warn_factory: WarnFactory | None = None,
        doveadm_factory: DoveadmFactory = open_doveadm,
    ) -> None:
        self.config_path = config_path
        self.clock = clock
        self.warn_factory = warn_factory or warn_hook
        self.counters = Counters()
        self.histogram = Histogram()
        self.sessions = SessionRegistry()
        self._factory = factory
        self._once_results: queue.Queue[JobResult | None] | None = None
        self._inflight = 0
        self._idle = threading.Condition()
        self._apply_lock = threading.Lock()
        config = load_config(config_path)
        self.state = State(config.state_dir)
        self.directory = Directory(self.state, clock, doveadm_factory)
        self.quotas = QuotaCache(config.schedule.interval / 2, clock, doveadm_factory)
        self.runtime = self.load(config)
        self.collector = StateCollector(self.state, self.counters, self.histogram, self.healthy)
        self.collector.now = lambda: self.clock().timestamp()
        self.cycles = Cycles()
        self.collector.info = RuntimeInfo(
            self.directory.statuses, self.cycles.seconds, lambda: dict(self.quotas.last_duration)
        )
        self.scheduler: Any = None
        self.last_ok: dict[str, bool] = {}

    # ------------------------------------------------------------------ config
    def load(self, config: Config | None = None) -> Runtime:
        """Read and validate the config and read every account source; ConfigError lists every problem."""
        config = config or load_config(self.config_path)
        secrets = secret_cache(config, self.config_path)
        found = self.directory.table(config, self.config_path, secrets, force=True)
        return Runtime.of_table(config, found, secrets)

    def _configure(self, rt: Runtime) -> None:
        rt_warn = self.warn_factory(rt.config, self.state, rt.secrets, self.counters)
        tokens, oauth2 = rt.secrets.tokens, [a for a in rt.accounts.values() if a.oauth2]
        self.collector.oauth2_expiry = dict
        if isinstance(tokens, TokenBroker) and oauth2:
            self.collector.oauth2_expiry = lambda: refresh_lapses(oauth2, tokens)
        self.runtime = Runtime(rt.config, rt.accounts, rt.secrets, rt_warn, rt.spans)
        self.quotas.max_age = rt.config.schedule.interval / 2
        self.quotas.expect(doveadm_users(rt.accounts))
        self.collector.configure(
            list(rt.accounts),
            rt.config.metrics.top_folders,
            rt.config.schedule.cleanup,
            {n: [(r, rt.config.rules[r].action) for r in a.rules if r in rt.config.rules]
             for n, a in rt.accounts.items() if a.rules},
            rt.config.metrics.per_account_level(len(rt.accounts)),
            rt.groups(),
        )  # fmt: skip

    # ------------------------------------------------------------------ scheduler
    def start(self, *, once: bool = False, paused: bool = False) -> None:
        """Configure metrics, add a job per account and start the scheduler (``paused``: for tests)."""
        self._configure(self.runtime)
        self._once_results = queue.Queue() if once else None
        concurrency = self.runtime.config.schedule.concurrency
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(concurrency, {"thread_name_prefix": "job"})},
            job_defaults={"max_instances": 1, "coalesce": True},
        )
        self.scheduler.add_listener(
            self._on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
        )
        now = self.clock()
        shared: Triggers = {}
        # Not a DateTrigger: APScheduler 3 removes a spent one-shot job without a lock check
        # and its thread dies if shutdown() comes in between (SIGTERM during --once). One
        # trigger for all (it never changes), not one per account.
        never_again = IntervalTrigger(days=36500, timezone=UTC)
        for name in self.runtime.accounts:
            if once:
                self.scheduler.add_job(self.run_job, never_again, args=(name,), id=name,
                                       name=name, next_run_time=now, misfire_grace_time=None)  # fmt: skip
            else:
                self._schedule(name, self._first_run(name, now), shared)
        if not once:
            self._sources_job(self.runtime.config)
        self.cycles.restart(self.runtime.accounts)
        self.scheduler.start(paused=paused)
        log.info("scheduler started with %d accounts, concurrency %d",
                 len(self.runtime.accounts), concurrency)  # fmt: skip

    def _first_run(self, name: str, now: datetime) -> datetime:
        """Soon (within the jitter) — or one interval after the last stored check, if that is later."""
        interval = self.runtime.config.schedule.interval
        start = now + timedelta(seconds=1)
        last = self.state.last_report(name)
        if last is not None:
            start = max(start, min(last[0] + interval, now + interval))
        return start

    def _schedule(self, name: str, start: datetime, shared: Triggers | None = None) -> None:
        """Add or replace the account's job, first due at ``start`` (rounded up to the second).

        ``shared`` (one dict per start-up or reload) lets the jobs due in the same second share
        one trigger, which never changes: 100,000 jobs then hold at most one trigger per second
        of the interval, not 100,000.
        """
        schedule = self.runtime.config.schedule
        seconds = schedule.interval.total_seconds()
        jitter = int(schedule.jitter.total_seconds()) or None
        if start.microsecond:
            start = start.replace(microsecond=0) + timedelta(seconds=1)
        key = (seconds, start, jitter)
        found = shared.get(key) if shared is not None else None
        if found is None:
            trigger = IntervalTrigger(
                seconds=seconds, start_date=start, jitter=jitter, timezone=UTC
            )
            # not an interval late after a slow start
            found = (trigger, trigger.get_next_fire_time(None, start))
            if shared is not None:
                shared[key] = found
        trigger, first = found
        if jitter is not None:  # each job draws its own jitter
            first = trigger.get_next_fire_time(None, start)
        self.scheduler.add_job(self.run_job, trigger, args=(name,), id=name, name=name,
                               next_run_time=first, misfire_grace_time=max(1, int(seconds)),
                               replace_existing=True)  # fmt: skip

    def _sources_job(self, config: Config) -> None:
        """The job that re-reads due account sources, while there are sources."""
        if config.account_sources and self.scheduler.get_job(SOURCES_JOB) is None:
            self.scheduler.add_job(self.refresh_sources, IntervalTrigger(seconds=SOURCES_EVERY,
                                   timezone=UTC), id=SOURCES_JOB, name=SOURCES_JOB)  # fmt: skip
        elif not config.account_sources:
            with suppress(JobLookupError):
                self.scheduler.remove_job(SOURCES_JOB)

    def healthy(self) -> bool:
        """True while the scheduler thread runs and no stop was asked for (``/healthz``)."""
        sched = self.scheduler
        thread = getattr(sched, "_thread", None)
        return bool(sched is not None and sched.running and thread is not None
                    and thread.is_alive() and not self.sessions.stopping.is_set())  # fmt: skip

    def _on_event(self, event: JobEvent) -> None:
        if event.job_id == SOURCES_JOB:
            if event.code == EVENT_JOB_ERROR:
                log.error("refreshing the account sources crashed: %s", event.exception)
            return
        if event.code == EVENT_JOB_MISSED:
            log.warning("account=%s job skipped: the pool was busy for a whole interval "
                        "(raise schedule.concurrency or interval)", event.job_id)  # fmt: skip
            self.counters.inc("quotawatch_jobs_missed_total", {})
        elif event.code == EVENT_JOB_ERROR:
            log.error("account=%s job crashed: %s", event.job_id, event.exception)
        result = getattr(event, "retval", None)
        if self._once_results is not None:
            self._once_results.put(result if isinstance(result, JobResult) else None)

    # ------------------------------------------------------------------ one job
    @contextmanager
    def _tracked(self) -> Iterator[None]:
        with self._idle:
            self._inflight += 1
        try:
            yield
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def run_job(self, name: str) -> JobResult | None:
        """The scheduled job of one account; None when skipped (stopping, removed, in backoff)."""
        if self.sessions.stopping.is_set():
            return None
        rt = self.runtime
        account = rt.accounts.get(name)
        if account is None:
            return None
        now = self.clock()
        backoff = Backoff.load(self.state, name, lambda: fingerprint(account))
        if backoff is not None and now < backoff.until:
            log.info("account=%s skipped: backing off after %d %s failures until %s",
                     name, backoff.failures, backoff.reason, backoff.until.isoformat())  # fmt: skip
            self.counters.inc("quotawatch_checks_total", {"result": "skipped"})
            self.cycles.checked(name, self.runtime.accounts)
            return None
        with self._tracked():
            bulk = False
            if account.quota_source == "doveadm":
                result, bulk = doveadm_job(account, self.quotas, rt.secrets, self.state, now,
                                           rt.warn, lambda: self._run_imap(account, rt, now))  # fmt: skip
            else:
                result = self._run_imap(account, rt, now)
            self._record(account, result, now, None if bulk else backoff, backoff_ok=not bulk)
        if self._once_results is None and adaptive(rt.config, len(rt.accounts)):
            due = now + delay_after(result.report, rt.config, self.state, now)
            with suppress(JobLookupError):
                self.scheduler.modify_job(name, next_run_time=due)
        self.cycles.checked(name, self.runtime.accounts)
        return result

    def _run_imap(self, account: Account, rt: Runtime, now: datetime) -> JobResult:
        return run_account(account, rt.config, self.state, rt.secrets,
                           cleanup=rt.config.schedule.cleanup, now=now,
                           factory=self.sessions.factory(self._factory), warn=rt.warn)  # fmt: skip

    def _record(
        self,
        account: Account,
        result: JobResult,
        now: datetime,
        backoff: Backoff | None,
        *,
        backoff_ok: bool = True,
    ) -> None:
        """Count the result, update the backoff, then log (so a logged result is visible)."""
        name, report = account.name, result.report
        if report.reason == "shutdown" or name not in self.runtime.accounts:
            return
        if report.reason == "locked":  # another worker has the mailbox: its job, not a failure
            self.counters.inc("quotawatch_checks_total", {"result": "skipped"})  # logged by the job
            return
        self.counters.inc("quotawatch_checks_total", {"result": "ok" if report.ok else "failed"})
        self.histogram.observe(report.duration_seconds)
        for reason in dict.fromkeys(r for r, _ in result.failures):
            labels = {"account": name, "reason": reason}
            self.counters.inc("quotawatch_account_errors_total", labels)
            self.counters.inc("quotawatch_errors_total", {"reason": reason})
        if result.cleanup is not None and result.cleanup.unconfirmed:
            self.counters.inc("quotawatch_cleanup_unconfirmed_total", {"account": name},
                              result.cleanup.unconfirmed)  # fmt: skip
        for done in result.cleanup.done if result.cleanup is not None else ():
            labels = {"account": name, "rule": done.rule, "action": done.action}
            self.counters.inc("quotawatch_cleanup_deleted_messages_total", labels, done.messages)
            self.counters.inc("quotawatch_cleanup_freed_bytes_total", labels, done.bytes)
        self.last_ok[name] = result.ok
        failed_plan = result.plan if result.plan is not None and result.plan.error else None
        planned = (failed_plan.reason, str(failed_plan.error)) if failed_plan else None
        for reason, message in result.failures:
            if (reason, message) == planned and reason not in ("plan", "clock"):
                log.warning("account=%s plan failed reason=%s: %s", name, reason, message)
            elif reason in ("plan", "cleanup", "clock"):
                log.warning("account=%s %s failed: %s", name, reason, message)
            elif reason == "state":
                log.warning("account=%s cleanup failed reason=state: %s", name, message)
            elif reason != "internal":  # internal errors were logged with their traceback
                log.warning("check failed account=%s reason=%s: %s", name, reason, message)
        if report.reason in BACKOFF_REASONS and backoff_ok:
            failures = (backoff.failures if backoff else 0) + 1
            until = now + backoff_delay(failures, self.runtime.config.schedule.interval)
            Backoff(failures, until, str(report.reason), fingerprint(account)).save(
                self.state, name
            )
            log.warning("account=%s %s failure %d; next attempt not before %s",
                        name, report.reason, failures, until.isoformat())  # fmt: skip
        elif backoff is not None:
            Backoff.clear(self.state, name)
        if report.snapshot is not None and log.isEnabledFor(logging.INFO):
            ratio = report.snapshot.usage_ratio
            plan = "" if result.plan is None else f", plan frees {result.plan.pending_bytes} bytes"
            log.info("account=%s checked in %.2fs: usage %s, %d folders%s", name,
                     report.duration_seconds, format_percent(ratio),
                     len(report.snapshot.folders), plan)  # fmt: skip

    # ------------------------------------------------------------------ reload and stop
    def reload(self) -> bool:
        """Apply a changed config file; an invalid one is logged and the old one kept."""
        try:
            new = self.load()
        except ConfigError as exc:
            for line in exc.lines():
                log.error("reload rejected: %s", line)
            log.error("reload rejected; still running the previous config")
            return False
        with self._apply_lock:
            self._apply(self.runtime, new)
        return True

    def refresh_sources(self) -> bool:
        """Re-read the account sources that are due; start and stop jobs for users that came or went."""
        rt = self.runtime
        if not self.directory.due(rt.config):
            return False
        try:
            found = self.directory.table(rt.config, self.config_path, rt.secrets)
        except ConfigError as exc:
            log.error("refreshing the account sources failed: %s", exc)
            return False
        new = Runtime.of_table(rt.config, found, rt.secrets)
        with self._apply_lock:
            if self.runtime is not rt or (
                new.spans == rt.spans and not _differ(rt.accounts, new.accounts)
            ):
                return False
            self._apply(rt, new)
        return True

    def _apply(self, old: Runtime, new: Runtime) -> None:
        """Swap in a new runtime: jobs for added and changed accounts, none for removed ones."""
        for what, before, after in (
            ("state_dir", old.config.state_dir, new.config.state_dir),
            ("metrics listen/TLS/auth", old.config.metrics.model_copy(update={"top_folders": 0}),
             new.config.metrics.model_copy(update={"top_folders": 0})),
            ("schedule.concurrency", old.config.schedule.concurrency, new.config.schedule.concurrency),
        ):  # fmt: skip
            if before != after:
                log.warning("reload: %s changed; this takes effect after a restart", what)
        removed = old.accounts.keys() - new.accounts.keys()
        added = new.accounts.keys() - old.accounts.keys()
        changed = {
            n
            for n in old.accounts.keys() & new.accounts.keys()
            if not _same(new.accounts, n, old.accounts)
        }
        timing = (old.config.schedule.interval, old.config.schedule.jitter) != (
            new.config.schedule.interval, new.config.schedule.jitter)  # fmt: skip
        self._configure(new)
        self.cycles.forget(new.accounts)
        self._sources_job(new.config)
        now = self.clock()
        for name in removed:
            with suppress(JobLookupError):
                self.scheduler.remove_job(name)
            self.last_ok.pop(name, None)
        shared: Triggers = {}
        for name in sorted(added | changed):
            self._schedule(name, now + timedelta(seconds=1), shared)
        if timing:
            for name in sorted(new.accounts.keys() - added - changed):
                self._schedule(name, self._first_run(name, now), shared)
        self.state.forget_accounts(new.accounts)
        log.info("reloaded: %d accounts (%d added, %d removed, %d changed)",
                 len(new.accounts), len(added), len(removed), len(changed))  # fmt: skip

    def stop(self, grace: float = STOP_GRACE) -> bool:
        """No new jobs or commands; wait up to ``grace`` seconds for sessions to log out."""
        self.sessions.stop()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        with self._idle:
            finished = self._idle.wait_for(lambda: self._inflight == 0, timeout=grace)
        if not finished:
            log.warning("stop: %d sessions still busy after %.0fs: %s", self._inflight, grace,
                        ", ".join(self.sessions.busy()))  # fmt: skip
        else:
            self.state.close()
        return finished

    def status_line(self) -> str:
        ok, total = sum(self.last_ok.values()), len(self.runtime.accounts)
        return f"{total} accounts: {ok} ok, {len(self.last_ok) - ok} failing, {total - len(self.last_ok)} not checked yet"

    def once_results(self, count: int, done: Callable[[], bool]) -> Sequence[JobResult | None]:
        """Wait for ``count`` job results of ``run --once`` (or until ``done()``)."""
        results: list[JobResult | None] = []
        assert self._once_results is not None, "start(once=True) first"
        while len(results) < count and not done():
            with suppress(queue.Empty):
                results.append(self._once_results.get(timeout=0.2))
        return results


def _same(accounts: Mapping[str, Account], name: str, other: Mapping[str, Account]) -> bool:
    """Whether account ``name`` (in both) has the same settings in ``other``."""
    if isinstance(accounts, AccountTable):
        return accounts.same(name, other)
    return accounts[name] == other[name]


def _differ(old: Mapping[str, Account], new: Mapping[str, Account]) -> bool:
    """Whether two account lists differ in names or in any account's settings."""
    return old.keys() != new.keys() or any(not _same(new, n, old) for n in new)
