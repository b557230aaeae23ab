"""Carry out a Plan on a logged-in session: batch by batch, UIDVALIDITY-checked, archived first, audited."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quotawatch.config import Account, Rule
from quotawatch.errors import ConnectError, MailboxError, QuotawatchError, ServerTimeout
from quotawatch.mail.session import MailboxSession, MessageMeta
from quotawatch.retention.archive import Archive
from quotawatch.retention.audit import AuditLog
from quotawatch.retention.planner import Plan, PlannedAction

log = logging.getLogger(__name__)

#: messages per batch: metadata fetch, archive, delete and audit happen per batch
BATCH = 500
_PAST = {"delete": "deleted", "archive": "archived", "move": "moved"}


@dataclass(frozen=True)
class ActionResult:
    """What one planned action really did."""

    rule: str
    folder: str
    action: str
    messages: int
    bytes: int


@dataclass(frozen=True)
class CleanupResult:
    """The outcome of executing one account's plan; ``freed_bytes`` is measured from the quota."""

    account: str
    done: tuple[ActionResult, ...]
    freed_bytes: int | None
    errors: tuple[str, ...] = ()

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
            "done": [
                {
                    "rule": d.rule,
                    "folder": d.folder,
                    "action": d.action,
                    "messages": d.messages,
                    "bytes": d.bytes,
                }
                for d in self.done
            ],
        }


def _kind(action: str) -> str:
    return "move" if action.startswith("move:") else action


def _storage(session: MailboxSession) -> int | None:
    try:
        resources, _notes = session.quota()
    except QuotawatchError:
        return None
    return next((q.usage for q in resources if q.resource.upper() == "STORAGE"), None)


class _Run:
    """State of one execution: results so far, errors, and audit entries waiting for commit."""

    def __init__(
        self,
        session: MailboxSession,
        plan: Plan,
        audit: AuditLog,
        now: datetime,
        progress: Callable[[str], None] | None,
        batch_size: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.session, self.plan, self.audit, self.now = session, plan, audit, now
        self.progress, self.batch_size, self.clock = progress, batch_size, clock
        self.done: list[ActionResult] = []
        self.errors: list[str] = []
        self.pending: list[dict[str, Any]] = []  # deferred deletes: audited after commit

    def entries(
        self, a: PlannedAction, metas: Sequence[MessageMeta], status: str, paths: Mapping[Any, Path]
    ) -> list[dict[str, Any]]:
        when = self.clock().isoformat()
        out = []
        for m in metas:
            entry: dict[str, Any] = {
                "time": when,
                "run": self.now.isoformat(),
                "account": self.plan.account,
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
            if m.uid in paths:
                entry["archive_path"] = str(paths[m.uid])
            out.append(entry)
        return out

    def remove(self, a: PlannedAction, uids: Sequence[int | str]) -> int:
        s = self.session
        target = a.action[5:] if a.action.startswith("move:") else None
        if target is not None:
            return s.move(a.folder, a.uidvalidity, uids, target)
        return s.delete(a.folder, a.uidvalidity, uids)

    def action(self, a: PlannedAction) -> None:
        s, kind = self.session, _kind(a.action)
        deferred = s.deferred_deletes and kind != "move"
        self.remove(a, ())  # probe: capabilities and UIDVALIDITY, before anything is touched
        archive = (
            Archive(Path(a.archive_dir), self.plan.account)
            if kind == "archive" and a.archive_dir
            else None
        )
        count = size = 0
        try:
            for start in range(0, len(a.uids), self.batch_size):
                batch = a.uids[start : start + self.batch_size]
                meta = s.message_meta(a.folder, a.uidvalidity, batch)
                present = [u for u in batch if u in meta]
                if not present:
                    continue
                paths: dict[Any, Path] = {}
                if archive is not None:
                    for uid in present:
                        data = s.fetch_message(a.folder, a.uidvalidity, uid)
                        paths[uid] = archive.store(a.folder, data, meta[uid].internaldate)
                try:
                    removed = present
                    if self.remove(a, present) != len(present):  # someone else was faster
                        still = s.message_meta(a.folder, a.uidvalidity, present)
                        removed = [u for u in present if u not in still]
                except MailboxError:
                    if not deferred:  # the server may have removed them before the link broke
                        self.audit.record_many(
                            self.entries(a, [meta[u] for u in present], "uncertain", paths)
                        )
                    raise
                entries = self.entries(a, [meta[u] for u in removed], "done", paths)
                if deferred:
                    self.pending += entries
                else:
                    self.audit.record_many(entries)
                count += len(removed)
                size += sum(meta[u].size for u in removed)
                if self.progress is not None:
                    word = "marked for deletion" if deferred else _PAST[kind]
                    self.progress(
                        f"{self.plan.account}: {a.rule}: {word} {start + len(batch)} of "
                        f"{len(a.uids)} messages in {a.folder}"
                    )
        finally:
            self.done.append(ActionResult(a.rule, a.folder, a.action, count, size))

    def commit(self) -> None:
        """Make deferred deletes final, then audit them; a failed commit deleted nothing."""
        try:
            self.session.commit()
        except QuotawatchError as exc:
            if self.pending:
                self.errors.append(f"{exc}; the server kept every message (nothing deleted)")
                self.done = [
                    ActionResult(d.rule, d.folder, d.action, 0, 0)
                    if _kind(d.action) != "move"
                    else d
                    for d in self.done
                ]
            else:
                self.errors.append(str(exc))
            return
        self.audit.record_many(self.pending)


def execute(
    session: MailboxSession,
    plan: Plan,
    account: Account,
    rules: Mapping[str, Rule],
    audit: AuditLog,
    now: datetime,
    progress: Callable[[str], None] | None = None,
    *,
    batch_size: int = BATCH,
    clock: Callable[[], datetime] | None = None,
) -> CleanupResult:
    """Execute exactly the plan's actions; never raises for server trouble, reports it instead.

    Each action is probed first (capabilities, UIDVALIDITY); a mismatch skips that folder. A
    lost connection stops the account; what was done so far is audited and counted.
    """
    if plan.error:
        return CleanupResult(
            plan.account, (), None, (f"{plan.account}: cleanup refused: {plan.error}",)
        )
    run = _Run(
        session, plan, audit, now, progress, batch_size, clock or (lambda: datetime.now(UTC))
    )
    before = _storage(session)
    alive = True
    for a in plan.actions:
        try:
            run.action(a)
        except QuotawatchError as exc:
            log.warning(
                "cleanup account=%s rule=%s folder=%s: %s", plan.account, a.rule, a.folder, exc
            )
            run.errors.append(str(exc))
            if isinstance(exc, ConnectError | ServerTimeout):
                alive = False
                break
    if alive:
        run.commit()
    elif run.pending:
        run.errors.append(
            f"{plan.account}: connection lost before the deletions were committed; nothing deleted"
        )
        run.done = [ActionResult(d.rule, d.folder, d.action, 0, 0) for d in run.done]
    after = _storage(session) if alive else None
    freed = before - after if before is not None and after is not None else None
    result = CleanupResult(plan.account, tuple(run.done), freed, tuple(run.errors))
    log.info(
        "cleanup account=%s messages=%d freed_bytes=%s errors=%d",
        plan.account, result.messages, freed, len(result.errors),
    )  # fmt: skip
    return result
