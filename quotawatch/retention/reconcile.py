"""Settle the journal's open intents of an earlier, interrupted cleanup against what the server shows now."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from quotawatch.errors import QuotawatchError, SafetyStop, StateError
from quotawatch.mail.session import MailboxSession
from quotawatch.retention.journal import Journal, key
from quotawatch.retention.planner import Plan

log = logging.getLogger(__name__)

Key = tuple[str, int | None, str]


@dataclass(frozen=True)
class Settlement:
    """What to do with each open intent (pure decision, see :func:`decide`)."""

    #: gone from the folder: the earlier removal happened; audited ``done`` now
    done: tuple[dict[str, Any], ...] = ()
    #: still there and planned again: left open; this run's execution journals and settles them
    #: (if it stops before them, they are still open for the next run, \\Deleted and all)
    again: tuple[dict[str, Any], ...] = ()
    #: still there, carrying our ``\\Deleted``, not eligible any more: flag taken off, ``kept``
    unmark: tuple[dict[str, Any], ...] = ()
    #: still there, not eligible any more: audited ``kept``
    kept: tuple[dict[str, Any], ...] = ()


def decide(
    intents: Iterable[dict[str, Any]],
    present: set[Key],
    marked: set[Key],
    planned: set[Key],
) -> Settlement:
    """Gone → done; still there → removed again only if the new plan names it; else left (and
    unmarked if it still carries ``\\Deleted``). ``marked`` ⊆ ``present``."""
    done, again, unmark, kept = [], [], [], []
    for intent in intents:
        k = key(intent)
        if k not in present:
            done.append(intent)
        elif k in planned:
            again.append(intent)
        elif k in marked:
            unmark.append(intent)
        else:
            kept.append(intent)
    return Settlement(tuple(done), tuple(again), tuple(unmark), tuple(kept))


def _status(entries: Sequence[dict[str, Any]], status: str, why: str = "") -> list[dict[str, Any]]:
    out = [{**e, "status": status, "reconciled": True} for e in entries]
    for e in out:
        if why:
            e["why"] = why
    return out


def reconcile(session: MailboxSession, journal: Journal, plan: Plan) -> int:
    """Settle every open intent of the plan's account; return how many turned out removed.

    A folder the server cannot show now (link trouble) keeps its intents open for the next run;
    a changed UIDVALIDITY settles them ``uncertain`` (their UIDs mean nothing any more). Raises
    StateError when the audit log cannot be written (then nothing was changed on the server).
    """
    account = plan.account
    intents = journal.open_intents(account)
    if not intents:
        return 0
    planned = {(a.folder, a.uidvalidity, str(u)) for a in plan.actions for u in a.uids}
    groups: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for intent in intents:
        groups.setdefault((intent["folder"], intent.get("uidvalidity")), []).append(intent)
    removed = 0
    for (folder, uidvalidity), group in groups.items():
        uids = [g["uid"] for g in group]
        try:
            found = session.message_meta(folder, uidvalidity, uids)
            present = {(folder, uidvalidity, str(u)) for u in found}
            still = [u for u in uids if u in found]
            flagged = session.marked_deleted(folder, uidvalidity, still) if still else set()
            marked = {(folder, uidvalidity, str(u)) for u in flagged}
        except SafetyStop as exc:
            why = f"cannot be reconciled: {exc}"
            journal.settle(account, _status(group, "uncertain", why))
            continue
        except StateError:
            raise
        except QuotawatchError as exc:
            log.warning("account=%s: journal of %s left open for the next run: %s",
                        account, folder, exc)  # fmt: skip
            continue
        s = decide(group, present, marked, planned)
        if s.unmark:
            try:
                session.unmark_deleted(folder, uidvalidity, [e["uid"] for e in s.unmark])
            except QuotawatchError as exc:
                log.warning("account=%s: cannot take \\Deleted off in %s; left open: %s",
                            account, folder, exc)  # fmt: skip
                s = Settlement(s.done, s.again, (), s.kept)
        outcomes = [
            *_status(s.done, "done"),
            *_status(s.unmark, "kept", "not eligible any more; \\Deleted taken off"),
            *_status(s.kept, "kept", "still on the server and not eligible any more"),
        ]
        journal.settle(account, outcomes)
        removed += len(s.done)
        log.info(
            "account=%s reconciled %d journaled messages in %s: %d removed earlier, %d planned "
            "again, %d left on the server",
            account, len(group), folder, len(s.done), len(s.again), len(s.unmark) + len(s.kept),
        )  # fmt: skip
    return removed
