"""Turn candidates and retention rules into a Plan, with watermarks, protections and safety caps (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from quotawatch.config import Rule
from quotawatch.config.profiles import GMAIL_DOWNLOAD_LIMIT
from quotawatch.mail.session import Candidate, FolderSelection, Keep, MessageMeta
from quotawatch.model import QuotaResource, Snapshot
from quotawatch.retention.caps import Limits, cap_problem
from quotawatch.retention.why import why_nothing
from quotawatch.units import format_percent


@dataclass(frozen=True)
class RuleSelection:
    """The candidates one rule may take, per folder in the rule's order of sacrifice.

    Candidate dates are the rule's age dates (time in folder, INTERNALDATE or Date header);
    a candidate without a date is never taken.
    """

    rule: str
    folders: tuple[FolderSelection, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedAction:
    """What one rule does to one folder: the exact UIDs at one UIDVALIDITY."""

    rule: str
    folder: str
    action: str  # "delete" | "move:<folder>" | "archive"
    uids: tuple[int | str, ...]
    uidvalidity: int | None
    bytes: int
    archive_dir: str | None = None
    #: the rule's protections, re-checked on the server just before the removal
    keep_flagged: bool = True
    keep_unseen: bool = False
    #: each UID's mod-sequence when planned (same order as ``uids``); empty without CONDSTORE
    modseqs: tuple[int, ...] = ()
    #: what the audit log records of each UID (same order), read when planning for a cleanup in
    #: the same session; empty: the executor reads it batch by batch
    metas: tuple[MessageMeta, ...] = ()

    @property
    def keep(self) -> Keep:
        """What must still hold at removal time for each UID (see MailboxSession.delete)."""
        modseqs = dict(zip(self.uids, self.modseqs, strict=True)) if self.modseqs else {}
        return Keep(self.keep_flagged, self.keep_unseen, modseqs)


@dataclass(frozen=True)
class Plan:
    """Everything a cleanup of one account would do; ``error`` set means it must not run."""

    account: str
    usage_before: float | None
    usage_after: float | None
    actions: tuple[PlannedAction, ...]
    notes: tuple[str, ...] = ()
    error: str | None = None
    #: why it must not run, as an error metric reason: ``plan`` (a cap, a server error) or ``clock``
    reason: str | None = None
    #: notes to show before anything else: the plan may run, but should it (Gmail's limit)?
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def pending_bytes(self) -> int:
        return sum(a.bytes for a in self.actions)

    @property
    def messages(self) -> int:
        return sum(len(a.uids) for a in self.actions)

    def to_json(self) -> dict[str, Any]:
        """The ``plan --json`` shape of one account."""
        return {
            "name": self.account,
            "ok": self.ok,
            "error": self.error,
            "usage_before": self.usage_before,
            "usage_after": self.usage_after,
            "actions": [
                {
                    "rule": a.rule,
                    "folder": a.folder,
                    "action": a.action,
                    "uids": list(a.uids),
                    "uidvalidity": a.uidvalidity,
                    "bytes": a.bytes,
                    "messages": len(a.uids),
                }
                for a in self.actions
            ],
            "messages": self.messages,
            "bytes": self.pending_bytes,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }


REDUCIBLE = ("STORAGE", "MESSAGE")


def projected_usage(
    quota: Sequence[QuotaResource],
    freed_bytes: int,
    freed_messages: int,
    resources: Sequence[str] | None = None,
) -> float | None:
    """The fullest resource's ratio after freeing this much (STORAGE in bytes, MESSAGE in count);
    ``resources`` limits which resources count (make-room looks only at what removing mail frees)."""
    ratios = []
    for q in quota:
        name = q.resource.upper()
        if q.limit <= 0 or (resources is not None and name not in resources):
            continue
        gone = {"STORAGE": freed_bytes, "MESSAGE": freed_messages}.get(name, 0)
        ratios.append(max(q.usage - gone, 0) / q.limit)
    return max(ratios) if ratios else None


def age_cutoff(rule: Rule, now: datetime) -> datetime:
    """Messages whose age date is before this may go: ``older_than``, and for the arrival ages
    (saved, received) also ``keep_newer_than``, the stricter. The sender's Date header (``age:
    sent``) never counts for ``keep_newer_than``: that is measured on arrival (arrival_cutoff)."""
    if rule.age == "sent":
        return now - (rule.older_than or timedelta(0))
    return now - max(rule.older_than or timedelta(0), rule.keep_newer_than)


def arrival_cutoff(rule: Rule, now: datetime) -> datetime:
    """Messages that arrived (INTERNALDATE, or first seen) before this are past keep_newer_than."""
    return now - rule.keep_newer_than


def server_older(rule: Rule) -> timedelta:
    """What the server's own clock must confirm of a message's arrival (IMAP WITHIN ``OLDER``):
    keep_newer_than, and for the arrival ages also older_than (a message cannot have been in a
    folder longer than since it arrived)."""
    if rule.age == "sent":
        return rule.keep_newer_than
    return max(rule.older_than or timedelta(0), rule.keep_newer_than)


def keeps_unseen(rule: Rule, folder: str) -> bool:
    """Whether ``rule`` protects unseen messages in ``folder`` (default: in INBOX only)."""
    return rule.keep_unseen if rule.keep_unseen is not None else folder.upper() == "INBOX"


def _eligible(rule: Rule, fs: FolderSelection, now: datetime, taken: set[Any]) -> list[Candidate]:
    """Candidates that pass the planner's own checks of age, arrival, size and double use."""
    cutoff, arrived_by = age_cutoff(rule, now), arrival_cutoff(rule, now)
    return [
        c
        for c in fs.candidates
        if c.date is not None
        and c.date < cutoff
        and (not rule.keep_newer_than or (c.arrived or c.date) < arrived_by)
        and (rule.larger_than is None or c.size > rule.larger_than)
        and (fs.folder, fs.uidvalidity, c.uid) not in taken
    ]


def _uid_key(uid: int | str) -> tuple[int, str]:
    return (0, f"{uid:020d}") if isinstance(uid, int) else (1, uid)


class _Builder:
    """Accumulates actions and what they free while rules are applied in turn."""

    def __init__(self, snapshot: Snapshot, account: str) -> None:
        self.snapshot = snapshot
        self.account = account
        self.actions: list[PlannedAction] = []
        self.notes: list[str] = []
        self.taken: set[Any] = set()
        self.freed_bytes = 0
        self.freed_messages = 0

    def usage(
        self, extra_bytes: int = 0, extra_messages: int = 0, reducible: bool = False
    ) -> float | None:
        return projected_usage(
            self.snapshot.quota,
            self.freed_bytes + extra_bytes,
            self.freed_messages + extra_messages,
            REDUCIBLE if reducible else None,
        )

    def add(self, name: str, rule: Rule, fs: FolderSelection, chosen: Sequence[Candidate]) -> None:
        if not chosen:
            return
        size = sum(c.size for c in chosen)
        archive_dir = (
            rule.archive_dir.replace("{account}", self.account) if rule.archive_dir else None
        )
        ordered = sorted(chosen, key=lambda c: _uid_key(c.uid))
        uids = tuple(c.uid for c in ordered)
        modseqs = tuple(c.modseq for c in ordered if c.modseq is not None)
        metas = tuple(c.meta for c in ordered if c.meta is not None)
        self.actions.append(
            PlannedAction(
                name,
                fs.folder,
                rule.action,
                uids,
                fs.uidvalidity,
                size,
                archive_dir,
                rule.keep_flagged,
                keeps_unseen(rule, fs.folder),
                modseqs if len(modseqs) == len(uids) else (),
                metas if len(metas) == len(uids) else (),
            )
        )
        self.taken.update((fs.folder, fs.uidvalidity, c.uid) for c in chosen)
        if rule.move_target is None:
            self.freed_bytes += size
            self.freed_messages += len(chosen)

    def age_rule(self, name: str, rule: Rule, sel: RuleSelection, now: datetime) -> None:
        for fs in sel.folders:
            chosen = _eligible(rule, fs, now, self.taken)
            if not chosen:
                self.notes += why_nothing(name, rule, fs, self.taken)
            self.add(name, rule, fs, chosen)
        if rule.move_target is not None:
            self.notes.append(f"rule {name}: moving within the account frees no quota")

    def quota_rule(self, name: str, rule: Rule, sel: RuleSelection, now: datetime) -> None:
        assert rule.when_above is not None and rule.down_to is not None
        before = projected_usage(self.snapshot.quota, 0, 0, REDUCIBLE)
        if before is None:
            self.notes.append(
                f"rule {name}: no STORAGE or MESSAGE quota limit known; when_above cannot apply"
            )
            return
        if before <= rule.when_above:
            self.notes.append(
                f"rule {name}: usage {format_percent(before)} is not above {format_percent(rule.when_above)}"
            )
            return
        if rule.move_target is not None:
            self.notes.append(
                f"rule {name}: moving within the account frees no quota; nothing planned"
            )
            return
        for fs in sel.folders:
            current = self.usage(reducible=True)
            if current is None or current < rule.down_to:
                break
            pool = _eligible(rule, fs, now, self.taken)
            if rule.order == "largest":
                pool.sort(key=lambda c: (-c.size, c.date or now))
            else:
                pool.sort(key=lambda c: (c.date or now, -c.size))
            chosen: list[Candidate] = []
            size = 0
            for c in pool:
                projected = self.usage(size, len(chosen), reducible=True)
                if projected is None or projected < rule.down_to:
                    break
                chosen.append(c)
                size += c.size
            self.add(name, rule, fs, chosen)
        after = self.usage(reducible=True)
        if after is not None and after >= rule.down_to:
            self.notes.append(
                f"rule {name}: not enough to take; usage stays at {format_percent(after)} "
                f"(down_to {format_percent(rule.down_to)})"
            )


def plan(
    snapshot: Snapshot,
    selections: Sequence[RuleSelection],
    rules: Mapping[str, Rule],
    limits: Limits,
    now: datetime,
) -> Plan:
    """The plan for one account: age rules first (in the given order), then quota-driven rules,
    which see the usage the age rules already freed; a message is planned at most once."""
    b = _Builder(snapshot, snapshot.account)
    age_first = sorted(selections, key=lambda s: rules[s.rule].when_above is not None)
    for sel in age_first:
        rule = rules[sel.rule]
        b.notes.extend(sel.notes)
        if rule.when_above is None:
            b.age_rule(sel.rule, rule, sel, now)
        else:
            b.quota_rule(sel.rule, rule, sel, now)
    before = snapshot.usage_ratio
    problem = cap_problem(b.actions, selections, limits)
    if problem is not None:
        return Plan(snapshot.account, before, before, (), tuple(b.notes), problem, "plan")
    notes, warnings = download_notes(b.actions, limits.download_per_day)
    return Plan(
        snapshot.account, before, b.usage(), tuple(b.actions), (*b.notes, *notes), None, None,
        warnings,
    )  # fmt: skip


def _mb(n: int) -> str:
    return f"{n / 1000**2:.1f} MB" if n < 10 * 1000**2 else f"{round(n / 1000**2):,} MB"


def download_notes(
    actions: Sequence[PlannedAction], per_day: int | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(notes, warnings) on what archive actions download against the provider's daily limit
    (Gmail's 2,500 MB over IMAP): a note within it, a warning above it; nothing without one."""
    archived = sum(a.bytes for a in actions if a.action == "archive")
    if per_day is None or not archived:
        return (), ()
    if archived <= per_day:
        return (f"{GMAIL_DOWNLOAD_LIMIT}: this plan archives {_mb(archived)}",), ()
    return (), (
        f"this plan archives {_mb(archived)}, above Gmail's IMAP download limit of "
        f"{_mb(per_day)} a day: Gmail refuses further downloads for up to a day once it is "
        "reached, so the run would stop part-way (what was archived and removed stays done); "
        "archive less per run (larger_than, older_than, fewer folders)",
    )


def failed_plan(account: str, error: str, usage: float | None = None, reason: str = "plan") -> Plan:
    """The plan of an account that could not be planned (login or server failure, the clock)."""
    return Plan(account, usage, usage, (), (), error, reason)
