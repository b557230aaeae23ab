"""What a cleanup did: per-action and per-account results, and the audit lines of single messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from quotawatch.mail.session import MessageMeta
from quotawatch.model import Snapshot
from quotawatch.retention.planner import Plan, PlannedAction


@dataclass(frozen=True)
class ActionResult:
    """What one planned action really did: ``messages`` of ``planned`` removed."""

    rule: str
    folder: str
    action: str
    messages: int
    bytes: int
    planned: int = 0
    #: sent to the server but not confirmed (reconciled at the next run)
    uncertain: int = 0


@dataclass(frozen=True)
class CleanupResult:
    """The outcome of executing one account's plan; ``freed_bytes`` is measured from the quota."""

    account: str
    done: tuple[ActionResult, ...]
    freed_bytes: int | None
    errors: tuple[str, ...] = ()
    #: the failure reason for metrics: ``cleanup``, or ``state`` when the journal failed
    reason: str = "cleanup"
    #: commits (IMAP STORE/EXPUNGE, MOVE, POP3 QUIT) sent whose confirmation was lost
    unconfirmed: int = 0
    #: messages an earlier, unconfirmed run turned out to have removed (audited ``done`` now)
    reconciled: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def messages(self) -> int:
        return sum(d.messages for d in self.done)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": list(self.errors),
            "freed_bytes": self.freed_bytes,
            "messages": self.messages,
            "unconfirmed": self.unconfirmed,
            "reconciled": self.reconciled,
            "done": [
                {
                    "rule": d.rule,
                    "folder": d.folder,
                    "action": d.action,
                    "messages": d.messages,
                    "bytes": d.bytes,
                    "planned": d.planned,
                    "uncertain": d.uncertain,
                }
                for d in self.done
            ],
        }


def entry(
    plan: Plan,
    a: PlannedAction,
    m: MessageMeta,
    status: str,
    when: datetime | str,
    now: datetime | str,
) -> dict[str, Any]:
    """One audit/journal line of message ``m`` of action ``a``; ``when`` and ``now`` may come as
    their ISO text already (the same for a whole batch)."""
    return {
        "time": when if isinstance(when, str) else when.isoformat(),
        "run": now if isinstance(now, str) else now.isoformat(),
        "account": plan.account,
        "folder": a.folder,
        "uidvalidity": a.uidvalidity,
        "uid": m.uid,
        "message_id": m.message_id,
        "internaldate": m.internaldate.isoformat() if m.internaldate else None,
        "size": m.size,
        "rule": a.rule,
        "action": a.action,
        "status": status,
    }


def with_status(
    entries: Sequence[dict[str, Any]], status: str, why: str = ""
) -> list[dict[str, Any]]:
    out = [{**e, "status": status} for e in entries]
    if why:
        for e in out:
            e["why"] = why
    return out


def after_cleanup(snap: Snapshot, cleanup: CleanupResult | None) -> Snapshot:
    """The snapshot corrected by what a cleanup in the same job removed (taken before it ran):
    what the job stores and warns from, without asking the server again."""
    if cleanup is None or not cleanup.done:
        return snap
    removed = [d for d in cleanup.done if not d.action.startswith("move:")]
    freed = (
        cleanup.freed_bytes if cleanup.freed_bytes is not None else sum(d.bytes for d in removed)
    )
    count = sum(d.messages for d in removed)
    quota = tuple(
        replace(q, usage=max(0, q.usage - (freed if q.resource == "STORAGE" else count)))
        if q.resource in ("STORAGE", "MESSAGE")
        else q
        for q in snap.quota
    )
    delta: dict[str, tuple[int, int]] = {}
    for d in cleanup.done:
        m, b = delta.get(d.folder, (0, 0))
        delta[d.folder] = (m - d.messages, b - d.bytes)
        if d.action.startswith("move:"):
            target = d.action[5:].strip()
            m, b = delta.get(target, (0, 0))
            delta[target] = (m + d.messages, b + d.bytes)
    folders = tuple(
        replace(
            f,
            messages=max(0, f.messages + delta.get(f.name, (0, 0))[0]),
            size_bytes=max(0, f.size_bytes + delta.get(f.name, (0, 0))[1]),
        )
        for f in snap.folders
    )
    return replace(snap, quota=quota, folders=folders)
