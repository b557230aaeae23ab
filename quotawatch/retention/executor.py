"""Carry out a Plan on a logged-in session: batch by batch, journaled first, UIDVALIDITY-checked, archived, audited."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quotawatch.config import Account, Rule
from quotawatch.errors import (
    CommitUnconfirmed,
    ConnectError,
    QuotawatchError,
    ServerTimeout,
    ShuttingDown,
    StateError,
)
from quotawatch.mail.session import MailboxSession, MessageMeta
from quotawatch.model import QuotaResource
from quotawatch.retention.audit import AuditLog
from quotawatch.retention.journal import Journal
from quotawatch.retention.planner import Plan, PlannedAction
from quotawatch.retention.results import ActionResult, CleanupResult, entry, with_status

log = logging.getLogger(__name__)

#: messages per batch: metadata fetch, archive, journal, delete and audit happen per batch
BATCH = 500
_PAST = {"delete": "deleted", "archive": "archived", "move": "moved"}
#: errors after which nothing more is sent in this session
_STOP = (ConnectError, ServerTimeout, ShuttingDown, StateError)


def _kind(action: str) -> str:
    return "move" if action.startswith("move:") else action


def _storage(session: MailboxSession, known: Sequence[QuotaResource] | None = None) -> int | None:
    """STORAGE usage: from ``known`` (the check's quota, read moments before) or from the server."""
    if known is None:
        try:
            known, _notes = session.quota()
        except QuotawatchError:
            return None
    return next((q.usage for q in known if q.resource.upper() == "STORAGE"), None)


@dataclass
class _Tally:
    """Counts of one action while it runs."""

    action: PlannedAction
    count: int = 0
    size: int = 0
    uncertain: int = 0
    kept: Counter[str] = field(default_factory=Counter)

    def result(self) -> ActionResult:
        a = self.action
        planned = len(a.uids)
        return ActionResult(
            a.rule, a.folder, a.action, self.count, self.size, planned, self.uncertain
        )


class _Run:
    """State of one execution: tallies, errors, and journaled deletes waiting for commit."""

    def __init__(
        self,
        session: MailboxSession,
        plan: Plan,
        journal: Journal,
        now: datetime,
        progress: Callable[[str], None] | None,
        batch_size: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.session, self.plan, self.journal, self.now = session, plan, journal, now
        self.progress, self.batch_size, self.clock = progress, batch_size, clock
        self.tallies: list[_Tally] = []
        self.errors: list[str] = []
        self.reason = "cleanup"
        self.unconfirmed = 0
        #: deferred deletes (POP3): (tally, journaled entries) waiting for commit()
        self.pending: list[tuple[_Tally, list[dict[str, Any]]]] = []

    def entries(
        self, a: PlannedAction, metas: Sequence[MessageMeta], paths: Mapping[Any, Path]
    ) -> list[dict[str, Any]]:
        when, now = self.clock().isoformat(), self.now.isoformat()
        out = []
        for m in metas:
            e = entry(self.plan, a, m, "intent", when, now)
            if m.uid in paths:
                e["archive_path"] = str(paths[m.uid])
            out.append(e)
        return out

    def settle(self, done: Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]]) -> None:
        self.journal.settle(self.plan.account, [*with_status(done, "done"), *kept])

    def keep(self, t: _Tally, entries: Sequence[dict[str, Any]], why: str) -> None:
        """Close intents of messages that stayed on the server, auditing why."""
        t.kept[why] += len(entries)
        self.journal.settle(self.plan.account, with_status(entries, "kept", why))

    def remove(
        self, a: PlannedAction, uids: Sequence[int | str], kept: dict[int | str, str] | None = None
    ) -> int:
        """Delete or move; the plan's protections and mod-sequences go along (``kept``: why a
        UID was left in place on purpose)."""
        s = self.session
        target = a.action[5:] if a.action.startswith("move:") else None
        if target is not None:
            return s.move(a.folder, a.uidvalidity, uids, target, a.keep, kept)
        return s.delete(a.folder, a.uidvalidity, uids, a.keep, kept)

    def action(self, a: PlannedAction) -> None:
        s, kind = self.session, _kind(a.action)
        deferred = s.deferred_deletes and kind != "move"
        t = _Tally(a)
        self.tallies.append(t)
        self.remove(a, ())  # probe: capabilities and UIDVALIDITY, before anything is touched
        archive = None
        if kind == "archive" and a.archive_dir:  # the mailbox module loads only for archives
            from quotawatch.retention.archive import Archive

            archive = Archive(Path(a.archive_dir), self.plan.account)
        # read when planning (delete only): a UID names one message, unchanged, for as long as
        # the UIDVALIDITY the removal insists on; which still exist the removal tells (``kept``)
        known = {m.uid: m for m in a.metas} if kind == "delete" and not deferred else {}
        for start in range(0, len(a.uids), self.batch_size):
            batch = a.uids[start : start + self.batch_size]
            if known:
                meta = {u: known[u] for u in batch}
            else:
                meta = s.message_meta(a.folder, a.uidvalidity, batch)
            present = [u for u in batch if u in meta]
            if len(present) < len(batch):
                why = "no longer on the server when its batch began"
                missing = [MessageMeta(u, 0, None, None) for u in batch if u not in meta]
                t.kept[why] += len(missing)
                self.journal.settle(  # also closes an intent an interrupted run left open
                    self.plan.account, with_status(self.entries(a, missing, {}), "kept", why)
                )
            if not present:
                continue
            paths: dict[Any, Path] = {}
            if archive is not None:
                for uid in present:
                    data = s.fetch_message(a.folder, a.uidvalidity, uid)
                    paths[uid] = archive.store(a.folder, data, meta[uid].internaldate)
            journaled = self.entries(a, [meta[u] for u in present], paths)
            self.journal.intend(self.plan.account, journaled)  # StateError: nothing touched
            kept: dict[int | str, str] = {}  # changed or protected since the plan: left alone
            try:
                count = self.remove(a, present, kept)
                removed = [u for u in present if u not in kept]  # a UID in ``kept`` stayed
                if count != len(removed):  # the count does not say which: look
                    still = s.message_meta(a.folder, a.uidvalidity, present)
                    removed = [u for u in present if u not in still]
            except ShuttingDown:  # refused before sending anything
                self.keep(t, journaled, "stopped before its batch was sent")
                raise
            except QuotawatchError:
                if deferred:  # marked or not: without QUIT the server deletes none of them
                    self.pending.append((t, journaled))
                else:  # the server may have removed them before the link broke
                    self.uncertain(t, journaled)
                    self.unconfirmed += 1
                raise
            if deferred:
                self.pending.append((t, journaled))
            else:
                gone = set(removed)
                t.count += len(removed)
                t.size += sum(meta[u].size for u in removed)
                stayed: list[dict[str, Any]] = []
                for e in journaled:
                    if e["uid"] not in gone:
                        why = kept.get(e["uid"], "still on the server after the command")
                        stayed += with_status([e], "kept", why)
                        t.kept[why] += 1
                self.settle([e for e in journaled if e["uid"] in gone], stayed)
            if self.progress is not None:
                word = "marked for deletion" if deferred else _PAST[kind]
                self.progress(
                    f"{self.plan.account}: {a.rule}: {word} {start + len(batch)} of "
                    f"{len(a.uids)} messages in {a.folder}"
                )

    def uncertain(self, t: _Tally, journaled: Sequence[dict[str, Any]]) -> None:
        """Audit messages whose removal was sent but not confirmed; their intents stay open."""
        t.uncertain += len(journaled)
        try:
            self.journal.audit.record_many(with_status(journaled, "uncertain"))
        except OSError as exc:
            log.error("account=%s: cannot audit uncertain removals: %s", self.plan.account, exc)

    def commit(self) -> None:
        """Make deferred deletes final, then audit them; a failed commit deleted nothing."""
        if not self.pending:
            try:
                self.session.commit()
            except QuotawatchError as exc:
                self.errors.append(str(exc))
            return
        try:
            self.session.commit()
        except CommitUnconfirmed as exc:
            self.errors.append(f"{exc}; the next run reconciles them")
            for t, journaled in self.pending:
                self.uncertain(t, journaled)
            self.unconfirmed += 1
            return
        except QuotawatchError as exc:
            self.errors.append(f"{exc}; the server kept every message (nothing deleted)")
            self.drop_pending("not deleted: the deletions were never committed (no QUIT)")
            return
        for t, journaled in self.pending:
            t.count += len(journaled)
            t.size += sum(int(e["size"]) for e in journaled)
        try:
            self.settle([e for _, journaled in self.pending for e in journaled], [])
        except StateError as exc:  # deleted but not audited: the next run audits them
            self.errors.append(str(exc))
            self.reason = "state"

    def drop_pending(self, why: str) -> None:
        """Close the intents of deferred deletes that were never committed."""
        for t, journaled in self.pending:
            try:
                self.keep(t, journaled, why)
            except StateError as exc:  # left open: the next run sees them still on the server
                log.error("%s", exc)
        self.pending = []

    def shortfall(self) -> None:
        """One error per action that removed fewer messages than planned, saying why."""
        for t in self.tallies:
            a, planned = t.action, len(t.action.uids)
            if t.count >= planned or t.uncertain:
                continue
            untried = planned - t.count - sum(t.kept.values())
            if untried > 0:
                t.kept["not attempted (the run stopped before them)"] += untried
            whys = "; ".join(f"{n} {why}" for why, n in t.kept.items() if n)
            self.errors.append(
                f"{self.plan.account}: {a.rule}: {_PAST[_kind(a.action)]} {t.count} of "
                f"{planned} planned messages in {a.folder}" + (f" ({whys})" if whys else "")
            )


def execute(
    session: MailboxSession,
    plan: Plan,
    account: Account,
    rules: Mapping[str, Rule],
    audit: AuditLog | Journal,
    now: datetime,
    progress: Callable[[str], None] | None = None,
    *,
    batch_size: int = BATCH,
    clock: Callable[[], datetime] | None = None,
    quota: Sequence[QuotaResource] | None = None,
) -> CleanupResult:
    """Execute exactly the plan's actions; never raises for server trouble, reports it instead.

    Each action is probed first (capabilities, UIDVALIDITY); a mismatch skips that folder. Each
    batch is journaled (fsynced) before the server is touched; if that fails, nothing is touched
    and the account stops with reason ``state``. A lost connection stops the account; what was
    done so far is audited, what was sent but not confirmed is audited ``uncertain``. ``quota``:
    the quota the check read just before planning, used as the "before" of ``freed_bytes``
    instead of reading it again (None: read it now).
    """
    if plan.error:
        return CleanupResult(
            plan.account, (), None, (f"{plan.account}: cleanup refused: {plan.error}",)
        )
    journal = audit if isinstance(audit, Journal) else Journal(audit)
    run = _Run(
        session, plan, journal, now, progress, batch_size, clock or (lambda: datetime.now(UTC))
    )
    before = _storage(session, quota)
    alive = True
    for a in plan.actions:
        try:
            run.action(a)
        except QuotawatchError as exc:
            log.warning(
                "cleanup account=%s rule=%s folder=%s: %s", plan.account, a.rule, a.folder, exc
            )
            run.errors.append(str(exc))
            if isinstance(exc, StateError):
                run.reason = "state"
            if isinstance(exc, _STOP):
                alive = False
                break
    if alive:
        run.commit()
    elif run.pending:
        run.errors.append(f"{plan.account}: stopped before the deletions were committed; "
                          "nothing deleted")  # fmt: skip
        run.drop_pending("not deleted: stopped before the deletions were committed (no QUIT)")
    started = {id(t.action) for t in run.tallies}
    run.tallies += [_Tally(a) for a in plan.actions if id(a) not in started]
    run.shortfall()
    after = _storage(session) if alive else None
    freed = before - after if before is not None and after is not None else None
    result = CleanupResult(
        plan.account, tuple(t.result() for t in run.tallies), freed, tuple(run.errors),
        run.reason, run.unconfirmed,
    )  # fmt: skip
    log.info(
        "cleanup account=%s messages=%d freed_bytes=%s errors=%d",
        plan.account, result.messages, freed, len(result.errors),
    )  # fmt: skip
    return result
