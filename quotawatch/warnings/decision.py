"""The pure warning decision: which mail (if any) a usage reading calls for, given what was sent before."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from quotawatch.config import Threshold, Warnings
from quotawatch.model import Snapshot
from quotawatch.units import format_percent, format_size

Kind = Literal["warning", "reminder", "all_clear"]

#: wait before the n-th retry of a mail the SMTP server did not accept: 5m, 10m, 20m, ... 4h
RETRY_FIRST = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=4)


@dataclass(frozen=True)
class Usage:
    """One reading: the fullest quota resource's ratio, and the bytes free in STORAGE if known."""

    ratio: float
    used_bytes: int | None = None
    limit_bytes: int | None = None

    @property
    def free_bytes(self) -> int | None:
        if self.used_bytes is None or self.limit_bytes is None:
            return None
        return max(0, self.limit_bytes - self.used_bytes)

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> Usage | None:
        """The usage of a snapshot, or None when it has no limited quota."""
        ratio = snap.usage_ratio
        if ratio is None:
            return None
        storage = snap.storage()
        if storage is None:
            return cls(ratio)
        return cls(ratio, storage.usage, storage.limit)


@dataclass(frozen=True)
class Pending:
    """A mail the SMTP server has not accepted yet; retried at ``retry_at``."""

    kind: Kind
    threshold: str
    attempts: int
    retry_at: datetime
    error: str


@dataclass(frozen=True)
class WarningState:
    """What was sent to one account: thresholds warned about since the last re-arm, and when."""

    fired: tuple[str, ...] = ()
    last_sent_at: datetime | None = None
    last_kind: Kind | None = None
    last_threshold: str | None = None
    pending: Pending | None = None

    def to_dict(self) -> dict[str, Any]:
        p = self.pending
        return {
            "fired": list(self.fired),
            "last_sent_at": self.last_sent_at.isoformat() if self.last_sent_at else None,
            "last_kind": self.last_kind,
            "last_threshold": self.last_threshold,
            "pending": None
            if p is None
            else {
                "kind": p.kind,
                "threshold": p.threshold,
                "attempts": p.attempts,
                "retry_at": p.retry_at.isoformat(),
                "error": p.error,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WarningState:
        if not data:
            return cls()
        p = data.get("pending")
        sent = data.get("last_sent_at")
        return cls(
            fired=tuple(data.get("fired", ())),
            last_sent_at=datetime.fromisoformat(sent) if sent else None,
            last_kind=data.get("last_kind"),
            last_threshold=data.get("last_threshold"),
            pending=None
            if not p
            else Pending(
                p["kind"],
                p["threshold"],
                int(p["attempts"]),
                datetime.fromisoformat(p["retry_at"]),
                str(p.get("error", "")),
            ),
        )


@dataclass(frozen=True)
class Decision:
    """``kind`` is the mail to send now (None: nothing); ``state`` is what to store after it was
    accepted, or right away when nothing is sent."""

    kind: Kind | None
    threshold: str | None
    state: WarningState
    why: str


def exceeded(t: Threshold, usage: Usage) -> bool:
    if t.ratio is not None:
        return usage.ratio >= t.ratio
    free = usage.free_bytes
    return free is not None and t.free_bytes is not None and free <= t.free_bytes


def severity(t: Threshold, usage: Usage) -> float:
    """A threshold's place on the usage scale, so "50MB free" can be ordered against "90%"."""
    if t.ratio is not None:
        return t.ratio
    if usage.limit_bytes:
        return 1 - (t.free_bytes or 0) / usage.limit_bytes
    return 1.0


def highest_exceeded(policy: Warnings, usage: Usage) -> Threshold | None:
    """The most severe threshold the usage is over, or None."""
    over = [t for t in policy.thresholds if exceeded(t, usage)]
    return max(over, key=lambda t: severity(t, usage)) if over else None


def decide(usage: Usage, state: WarningState, policy: Warnings, now: datetime) -> Decision:
    """One mail per crossing, a higher threshold its own, reminders while above the highest crossed,
    re-arm (and one all-clear) below ``rearm_below``; a pending mail waits for its retry time."""
    thresholds = sorted(policy.thresholds, key=lambda t: severity(t, usage))
    over = [t for t in thresholds if exceeded(t, usage)]
    fired = [t for t in thresholds if t.label in state.fired]
    if state.pending is not None and now < state.pending.retry_at:
        return Decision(None, None, state, f"retry of the {state.pending.kind} mail waits")
    base = replace(state, pending=None)

    new = [t for t in over if t.label not in state.fired]
    if new:
        top = new[-1]
        fired_after = tuple(t.label for t in thresholds if t in fired or t in new)
        if fired and severity(top, usage) <= severity(fired[-1], usage):
            quiet = replace(base, fired=fired_after)
            return Decision(None, None, quiet, f"{top.label} is below the highest warned threshold")
        sent = _sent(base, "warning", top.label, now, fired_after)
        return Decision("warning", top.label, sent, f"crossed {top.label}")

    rearm = [t for t in fired if usage.ratio < policy.rearm_below and not exceeded(t, usage)]
    if fired and len(rearm) == len(fired):
        if policy.all_clear and state.last_sent_at is not None:
            sent = _sent(base, "all_clear", "all_clear", now, ())
            return Decision("all_clear", "all_clear", sent, f"below {policy.rearm_below:.0%}")
        return Decision(None, None, replace(base, fired=()), "re-armed")

    if fired and exceeded(fired[-1], usage) and policy.remind_every is not None:
        due = state.last_sent_at is None or now - state.last_sent_at >= policy.remind_every
        if due:
            top = over[-1]
            return Decision(
                "reminder", top.label, _sent(base, "reminder", top.label, now), "remind"
            )
    if not fired:
        return Decision(None, None, base, "nothing new")
    if policy.remind_every is None or state.last_sent_at is None:
        return Decision(None, None, base, f"already warned at {fired[-1].label}; reminders are off")
    when = (state.last_sent_at + policy.remind_every).strftime("%Y-%m-%d %H:%M %Z")
    return Decision(
        None, None, base, f"already warned at {fired[-1].label}; next reminder {when}".rstrip()
    )


def why_not_due(usage: Usage, policy: Warnings, decision: Decision) -> str:
    """One line for a preview when ``decision`` sends nothing: ``no warning due (79.9 %, below
    80 %)``, or what keeps an account above a threshold quiet (already warned, reminder later)."""
    pct = format_percent(usage.ratio)
    top = highest_exceeded(policy, usage)
    if top is None:
        lowest = min(policy.thresholds, key=lambda t: severity(t, usage))
        if lowest.ratio is not None:
            return f"no warning due ({pct}, below {format_percent(lowest.ratio)})"
        free = usage.free_bytes
        have = f", {format_size(free)} free" if free is not None else ""
        return f"no warning due ({pct}{have}, more than {lowest.label})"
    return f"no warning due ({pct}, above {top.label.replace('%', ' %')}: {decision.why})"


def _sent(
    state: WarningState,
    kind: Kind,
    threshold: str,
    now: datetime,
    fired: tuple[str, ...] | None = None,
) -> WarningState:
    return WarningState(
        fired=state.fired if fired is None else fired,
        last_sent_at=now,
        last_kind=kind,
        last_threshold=threshold,
        pending=None,
    )


def retry_delay(attempts: int) -> timedelta:
    """5 minutes after the first failure, doubling, at most 4 hours."""
    return min(RETRY_FIRST * (1 << min(16, max(0, attempts - 1))), RETRY_MAX)


def failed(state: WarningState, decision: Decision, now: datetime, error: str) -> WarningState:
    """The state to store when the mail of ``decision`` was not accepted: unchanged but pending."""
    assert decision.kind is not None and decision.threshold is not None
    attempts = (state.pending.attempts if state.pending else 0) + 1
    pending = Pending(
        decision.kind, decision.threshold, attempts, now + retry_delay(attempts), error
    )
    return replace(state, pending=pending)
