"""Warn an account's users by mail: decide, render, send, and store "sent" only after the server accepted."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Protocol

from quotawatch.config import Account, Config
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import MailError
from quotawatch.model import AccountReport, Snapshot
from quotawatch.state import State
from quotawatch.text import clean
from quotawatch.warnings import WarnHook
from quotawatch.warnings.decision import Decision, Usage, WarningState, decide, failed
from quotawatch.warnings.digest import send_digest_if_due
from quotawatch.warnings.forecast import WINDOW, days_until_full
from quotawatch.warnings.mailer import Mailer, build_message
from quotawatch.warnings.render import Freeable, MailContent, render

if TYPE_CHECKING:
    from quotawatch.retention.planner import Plan
    from quotawatch.retention.results import CleanupResult

log = logging.getLogger(__name__)


SENT = "quotawatch_warnings_sent_total"
FAILED = "quotawatch_warnings_failed_total"


class Counters(Protocol):
    """What ``quotawatch.service.metrics.Counters`` offers; anything with ``inc`` will do."""

    def inc(self, name: str, labels: Mapping[str, str], value: float = 1) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What ``warn_account`` did: ``sent``, ``failed`` or ``none``, and why."""

    result: str
    kind: str | None = None
    threshold: str | None = None
    detail: str = ""


def recipients(account: Account) -> list[str]:
    """The account's address and its ``warning_email``, without duplicates."""
    out: list[str] = []
    for addr in (account.email, account.warning_email):
        if addr and addr.lower() not in {a.lower() for a in out}:
            out.append(addr)
    return out


def freeable(plan: Plan | None) -> tuple[Freeable, ...]:
    """Per rule, what the plan removes from the server (moves between folders free nothing)."""
    if plan is None or plan.error:
        return ()
    by_rule: dict[str, Freeable] = {}
    for a in plan.actions:
        if a.action.startswith("move:") or not a.uids:
            continue
        f = by_rule.get(a.rule, Freeable(a.rule, (), 0, 0))
        folders = f.folders if a.folder in f.folders else (*f.folders, a.folder)
        by_rule[a.rule] = Freeable(a.rule, folders, f.messages + len(a.uids), f.bytes + a.bytes)
    return tuple(by_rule.values())


def content(
    account: Account,
    snap: Snapshot,
    config: Config,
    state: State,
    now: datetime,
    kind: str,
    threshold: str | None,
    *,
    rules: tuple[Freeable, ...] = (),
    pending_bytes: int = 0,
) -> MailContent:
    """The plain data of one mail; ``rules`` (or just ``pending_bytes``) from the plan."""
    assert config.warnings is not None
    fullest, storage = snap.fullest(), snap.storage()
    ratio = snap.usage_ratio or 0.0
    history = state.usage_history(account.name, since=now - WINDOW)
    total = sum(f.bytes for f in rules) if rules else pending_bytes
    show_cleanup = config.schedule.cleanup and total > 0
    return MailContent(
        kind=kind,
        account=clean(account.email or account.name),
        threshold=threshold,
        ratio=ratio,
        used_bytes=storage.usage if storage else None,
        limit_bytes=storage.limit if storage else None,
        messages=(fullest.usage, fullest.limit)
        if fullest is not None and fullest.resource == "MESSAGE"
        else None,
        folders=tuple(snap.folders_by_size()),
        freeable=rules if show_cleanup else (),
        freeable_total=total if show_cleanup else 0,
        days_until_full=days_until_full(history, now),
        remind_every=config.warnings.remind_every,
    )


def compose(account: Account, c: MailContent, config: Config, now: datetime) -> EmailMessage:
    """The mail for ``c`` in the account's language, to its addresses, Cc the admin if set."""
    assert config.warnings is not None and config.smtp is not None
    lang = account.language or config.warnings.language
    to = recipients(account)
    cc = [config.warnings.cc_admin] if config.warnings.cc_admin else []
    cc = [a for a in cc if a.lower() not in {t.lower() for t in to}]
    return build_message(render(c, lang), config.smtp.from_, to, cc, now)


def warn_account(
    account: Account,
    report: AccountReport,
    plan: Plan | None,
    state: State,
    config: Config,
    now: datetime,
    mailer: Mailer,
    *,
    counters: Counters | None = None,
    cleanup: CleanupResult | None = None,
) -> Outcome:
    """Decide, send if due, store the new state; MailError is caught, counted and retried later."""
    if config.warnings is None or config.smtp is None:
        return Outcome("none", detail="warnings are not configured")
    if report.snapshot is None:
        return Outcome("none", detail="no usage reading (the check failed)")
    snap = report.snapshot  # the pipeline has corrected it by what the job's cleanup removed
    usage = Usage.from_snapshot(snap)
    if usage is None:
        return Outcome("none", detail="no quota limit known")
    if not recipients(account):
        return Outcome("none", detail="the account has no email or warning_email")
    before = WarningState.from_dict(state.warning_state(account.name))
    decision = decide(usage, before, config.warnings, now)
    if decision.kind is None:
        if decision.state != before:
            state.set_warning_state(account.name, decision.state.to_dict())
        return Outcome("none", detail=decision.why)
    rules = () if cleanup is not None else freeable(plan)
    msg = compose(
        account,
        content(account, snap, config, state, now, decision.kind, decision.threshold, rules=rules),
        config,
        now,
    )
    return _send(account, msg, decision, before, state, now, mailer, counters)


def _send(
    account: Account,
    msg: EmailMessage,
    decision: Decision,
    before: WarningState,
    state: State,
    now: datetime,
    mailer: Mailer,
    counters: Counters | None,
) -> Outcome:
    labels = {"account": account.name, "threshold": decision.threshold or ""}
    try:
        mailer.send(msg)
    except MailError as exc:
        after = failed(before, decision, now, str(exc))
        state.set_warning_state(account.name, after.to_dict())
        if counters is not None:
            counters.inc(FAILED, labels)
        retry = after.pending.retry_at.isoformat() if after.pending else "-"
        log.warning(
            "warning mail not sent account=%s kind=%s threshold=%s reason=%s retry_at=%s: %s",
            account.name, decision.kind, decision.threshold, exc.reason, retry, exc,
        )  # fmt: skip
        return Outcome("failed", decision.kind, decision.threshold, str(exc))
    state.set_warning_state(account.name, decision.state.to_dict())
    if counters is not None:
        counters.inc(SENT, labels)
    log.info(
        "warning mail sent account=%s kind=%s threshold=%s",
        account.name, decision.kind, decision.threshold,
    )  # fmt: skip
    return Outcome("sent", decision.kind, decision.threshold, decision.why)


def process_warnings(
    account: Account,
    report: AccountReport,
    plan: Plan | None,
    state: State,
    config: Config,
    now: datetime,
    mailer: Mailer,
    *,
    counters: Counters | None = None,
    cleanup: CleanupResult | None = None,
) -> None:
    """The daemon's warn hook: ``warn_account`` plus the admin digest when due; never raises."""
    try:
        warn_account(
            account, report, plan, state, config, now, mailer, counters=counters, cleanup=cleanup
        )
    except Exception:
        log.exception("warning failed account=%s", account.name)
    send_digest_if_due(state, config, now, mailer)


def make_warn_hook(
    config: Config, state: State, secrets: SecretCache, counters: Counters
) -> WarnHook | None:
    """The daemon's ``WarnFactory``: a hook bound to one config, or None without warnings."""
    if config.warnings is None or config.smtp is None:
        return None
    mailer = Mailer(config.smtp, secrets)

    def hook(
        account: Account,
        report: AccountReport,
        plan: Any,
        now: datetime,
        cleanup: CleanupResult | None = None,
    ) -> None:
        process_warnings(
            account, report, plan, state, config, now, mailer, counters=counters, cleanup=cleanup
        )

    return hook
