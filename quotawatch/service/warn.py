"""The ``quotawatch warn`` command: preview the mail an account would get, or decide and send now."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from quotawatch.config import Account, Config
from quotawatch.config.secrets import SecretCache
from quotawatch.mail.connect import open_session
from quotawatch.mail.session import SessionFactory
from quotawatch.model import AccountReport, FolderInfo, QuotaResource, Snapshot
from quotawatch.service.jobs import run_account
from quotawatch.state import State
from quotawatch.warnings.decision import (
    Usage,
    WarningState,
    decide,
    highest_exceeded,
    why_not_due,
)
from quotawatch.warnings.mailer import Mailer
from quotawatch.warnings.notify import Outcome, compose, content, freeable, recipients, warn_account


def snapshot_from_stored(name: str, taken_at: datetime, data: dict[str, Any]) -> Snapshot | None:
    """The snapshot kept in a stored report (``check --json`` shape), or None if it has none."""
    if not data.get("quota") and not data.get("folders"):
        return None
    quota = tuple(
        QuotaResource(q["root"], q["resource"], int(q["usage"]), int(q["limit"]))
        for q in data.get("quota") or ()
    )
    folders = tuple(
        FolderInfo(f["name"], int(f["messages"]), int(f["size_bytes"]), f.get("special_use"))
        for f in data.get("folders") or ()
    )
    protocol = str(data.get("protocol", "imap"))
    return Snapshot(name, protocol, taken_at, quota, folders, tuple(data.get("notes") or ()))


def preview_decision(
    account: Account, snap: Snapshot, state: State, config: Config, now: datetime, force: bool
) -> tuple[str | None, str | None, str]:
    """(kind, threshold, explanation) of the mail a preview shows, kind None when it shows none:
    only a mail that is due, or with ``force`` the warning at the current level. The state is
    not changed."""
    assert config.warnings is not None
    usage = Usage.from_snapshot(snap)
    if usage is None:
        if not force:
            return None, None, "no warning due (no quota limit known)"
        return "warning", None, "no quota limit known; showing a warning anyway (--force)"
    before = WarningState.from_dict(state.warning_state(account.name))
    decision = decide(usage, before, config.warnings, now)
    if decision.kind is not None:
        return decision.kind, decision.threshold, f"would be sent now ({decision.why})"
    line = why_not_due(usage, config.warnings, decision)
    if not force:
        return None, None, line
    top = highest_exceeded(config.warnings, usage)
    return "warning", top.label if top else None, f"{line}; showing the warning anyway (--force)"


def format_message(msg: EmailMessage) -> str:
    """Headers (decoded) and the plain text part, as a person reads them."""
    lines = [f"{name}: {value}" for name, value in msg.items() if name.lower() != "content-type"]
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    body = text.get_content() if text is not None else ""
    extra = f"\n[text/html alternative: {len(html.get_content())} characters]" if html else ""
    return "\n".join(lines) + "\n\n" + body + extra


def preview_account(
    account: Account,
    config: Config,
    state: State,
    secrets: SecretCache,
    now: datetime,
    *,
    force: bool = False,
    factory: SessionFactory = open_session,
) -> tuple[str, bool]:
    """The mail ``account`` would get now (with ``force``: the warning at its level even if none is
    due), else one line saying why none is due; from its stored report if any, else a live check."""
    stored = state.last_report(account.name)
    snap = snapshot_from_stored(account.name, stored[0], stored[2]) if stored else None
    plan: Any = None
    pending = 0
    if stored is not None and snap is not None:
        source = f"stored report of {stored[0].isoformat(timespec='seconds')}"
        pending = int(stored[2].get("pending_bytes") or 0)
    else:
        job = run_account(account, config, state, secrets, cleanup=False, now=now, factory=factory)
        if job.report.snapshot is None:
            return f"# {account.name}: check failed: {job.report.error}", False
        snap, plan, source = job.report.snapshot, job.plan, "live check"
    kind, threshold, why = preview_decision(account, snap, state, config, now, force)
    note = "" if recipients(account) else "; the account has no email or warning_email"
    if kind is None:
        return f"{account.name}: {why} (from the {source}{note})", True
    c = content(
        account, snap, config, state, now, kind, threshold,
        rules=freeable(plan), pending_bytes=pending,
    )  # fmt: skip
    msg = compose(account, c, config, now)
    return f"# {account.name}: {why} (from the {source}{note})\n{format_message(msg)}", True


def warn_now(
    accounts: Sequence[Account],
    config: Config,
    state: State,
    secrets: SecretCache,
    now: datetime,
    *,
    factory: SessionFactory = open_session,
) -> list[tuple[str, Outcome]]:
    """Check each account (no cleanup), then decide and send its warning as the daemon would."""
    assert config.smtp is not None
    mailer = Mailer(config.smtp, secrets)
    out: list[tuple[str, Outcome]] = []
    for account in accounts:
        got: list[Outcome] = []

        def hook(
            account: Account,
            report: AccountReport,
            plan: Any,
            now: datetime,
            cleanup: Any = None,
        ) -> None:
            got.append(  # noqa: B023
                warn_account(account, report, plan, state, config, now, mailer, cleanup=cleanup)
            )

        job = run_account(
            account, config, state, secrets, cleanup=False, now=now, factory=factory, warn=hook
        )
        if job.report.snapshot is None:
            out.append(
                (account.name, Outcome("failed", detail=f"check failed: {job.report.error}"))
            )
        else:
            out.append((account.name, got[0] if got else Outcome("failed", detail="hook failed")))
    return out
