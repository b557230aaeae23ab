"""Candidates for one account's rules: resolve each rule's folders, ask the session for what it
may take there (one server-side search per rule and folder), date it, and plan."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from quotawatch.config import Account, Rule
from quotawatch.errors import ClockError
from quotawatch.mail.session import FolderSelection, MailboxSession, SearchQuery
from quotawatch.model import VIRTUAL_FLAGS, VIRTUAL_NAMES, FolderInfo, Snapshot
from quotawatch.retention.caps import Limits
from quotawatch.retention.client_guard import guard_candidates
from quotawatch.retention.clock import SLACK, ClockRecord, judge
from quotawatch.retention.planner import (
    Plan,
    RuleSelection,
    age_cutoff,
    keeps_unseen,
    plan,
    server_older,
)
from quotawatch.retention.why import count
from quotawatch.state import State

log = logging.getLogger(__name__)

_VIRTUAL = {f.lower() for f in VIRTUAL_FLAGS}


def is_virtual(folder: FolderInfo) -> bool:
    """A view onto other folders (\\All, \\Flagged, \\Important, Gmail's All Mail)."""
    return (folder.special_use or "").lower() in _VIRTUAL or folder.name.lower() in VIRTUAL_NAMES


def resolve_folders(
    name: str, rule: Rule, folders: Sequence[FolderInfo]
) -> tuple[list[str], list[str]]:
    """Folder names a rule covers, in the order of its ``folders`` entries, and notes.

    An entry is a special-use flag (``\\Trash``), a folder's exact name (``[Gmail]/Trash``) or
    else a shell-style glob. A glob never matches INBOX unless the rule has ``allow_inbox``. No
    entry ever yields a virtual folder (\\All, \\Flagged, ...: deleting there deletes the
    message wherever it is kept, INBOX included); a named one is noted. The rule's own move
    target is never cleaned by it.
    """
    found: list[str] = []
    notes: list[str] = []
    target = rule.move_target
    for entry in rule.folders:
        if entry.startswith("\\"):
            hits = [f for f in folders if (f.special_use or "").lower() == entry.lower()]
        elif any(ch in entry for ch in "*?[") and all(f.name != entry for f in folders):
            hits = [
                f
                for f in folders
                if fnmatchcase(f.name, entry)
                and (rule.allow_inbox or f.name.upper() != "INBOX")
                and not is_virtual(f)
            ]
        else:
            inbox = entry.upper() == "INBOX"
            hits = [f for f in folders if f.name == entry or (inbox and f.name.upper() == "INBOX")]
        if not hits:
            notes.append(f"rule {name}: no folder matches {entry!r}")
        virtual = [f.name for f in hits if is_virtual(f)]
        if virtual:
            notes.append(
                f"rule {name}: {', '.join(map(repr, virtual))} is a virtual folder (a view of "
                "mail kept in other folders); never cleaned"
            )
        matches = [f.name for f in hits if not is_virtual(f)]
        found += [m for m in matches if m not in found and m != target]
    return found, notes


def move_target(rule: Rule, folders: Sequence[FolderInfo]) -> str | None:
    """The folder a ``move:`` action goes to; a special-use flag is resolved to its folder."""
    target = rule.move_target
    if target is None or not target.startswith("\\"):
        return target
    return next((f.name for f in folders if (f.special_use or "").lower() == target.lower()), None)


def search_query(rule: Rule, folder: str, now: datetime, apply: bool = False) -> SearchQuery:
    """What the server should select for ``rule`` in ``folder``, protections included. With
    ``apply`` (a cleanup follows in the same session) an age rule that deletes also reads what
    the audit log records, in the same fetch: the executor then needs no fetch of its own."""
    return SearchQuery(
        before=age_cutoff(rule, now),
        age=rule.age,
        larger_than=rule.larger_than,
        exclude_flagged=rule.keep_flagged,
        exclude_unseen=keeps_unseen(rule, folder),
        older=server_older(rule),
        audit=apply and rule.action == "delete" and rule.when_above is None,
    )


def _dated(
    session: MailboxSession, account: Account, sel: FolderSelection, state: State, now: datetime
) -> tuple[FolderSelection, tuple[str, ...]]:
    """Apply first-seen dates where the server could not apply the age, and the POP3 guard."""
    pop3 = session.protocol == "pop3"
    if sel.age_applied and not pop3:
        return sel, ()
    uids = sel.all_uids or tuple(c.uid for c in sel.candidates)
    seen = state.first_seen(account.name, sel.folder, sel.uidvalidity or 0, uids, now)
    candidates = sel.candidates
    if not sel.age_applied:
        candidates = tuple(replace(c, date=seen.get(c.uid)) for c in candidates)
    if pop3:  # POP3 has no INTERNALDATE: a message arrived when it was first seen
        candidates = tuple(replace(c, arrived=seen.get(c.uid)) for c in candidates)
    notes: tuple[str, ...] = ()
    if pop3:
        candidates, notes = guard_candidates(account, candidates, seen, now)
    return replace(sel, candidates=tuple(candidates), age_applied=True), tuple(notes)


def check_clock(
    session: MailboxSession,
    account: Account,
    folders: Sequence[str],
    state: State,
    now: datetime,
    slack: timedelta = SLACK,
    sample: FolderSelection | None = None,
) -> None:
    """Raise ClockError unless ``now`` is plausible by the server (clock.judge); the evidence is
    probed on the first of ``folders`` that holds mail, and kept only from a plausible run.
    ``sample``: the selection just read in ``folders[0]``, whose newest candidate the server
    may judge the clock on in the same round trip as anything else (see clock_probe)."""
    arrived = [(c.arrived, c.uid) for c in sample.candidates if c.arrived] if sample else []
    latest = max(arrived, default=None)
    probe = None
    for n, folder in enumerate(folders):
        hint = (latest[1], latest[0]) if latest is not None and n == 0 else None
        probe = session.clock_probe(folder, now, slack, hint)
        if probe is not None:
            break
    newest, last = state.clock_evidence(account.name)
    verdict = judge(now, probe, ClockRecord(newest, last), slack=slack)
    if verdict.problem is not None:
        log.warning(
            "clock account=%s: %s; cleanup stopped, checks and warnings go on",
            account.name, verdict.problem,
        )  # fmt: skip
        raise ClockError(account.name, verdict.problem)
    state.set_clock_evidence(account.name, verdict.record.newest_stamp, verdict.record.last_run)


def plan_account(
    session: MailboxSession,
    account: Account,
    rules: Mapping[str, Rule],
    snapshot: Snapshot,
    state: State,
    now: datetime,
    *,
    clock_slack: timedelta = SLACK,
    explain: bool = False,
    apply: bool = False,
) -> Plan:
    """Check the clock, gather each of the account's rules' candidates (one search per rule and
    folder), then plan. ``clock_slack`` is how far ``now`` may stray from the server's clock;
    ``explain`` (for a person reading ``plan``, not the daemon) spends an extra search where a
    rule selected nothing, to say which protection held the folder's old mail back. ``apply``:
    the plan is carried out in this session (see :func:`search_query`).

    Server errors and an implausible clock (ClockError) propagate; the caller records them as
    the plan's error.
    """
    selections = []
    used = {name: rules[name] for name in account.rules if name in rules}
    targets = [
        f for name, rule in used.items() for f in resolve_folders(name, rule, snapshot.folders)[0]
    ]
    full = [f.name for f in snapshot.folders if f.messages]
    probed = [f for f in targets if f in full] or full[:1]
    # the clock is judged after the first search (read-only: nothing stamped or planned yet),
    # on what it found where it can be; before anything that records first-seen times
    unjudged = True
    for name, rule in used.items():
        folders, notes = resolve_folders(name, rule, snapshot.folders)
        if rule.move_target is not None:
            target = move_target(rule, snapshot.folders)
            if target is None:
                notes.append(f"rule {name}: no folder is {rule.move_target}; nothing planned")
                folders = []
            else:
                used[name] = rule = rule.model_copy(update={"action": f"move:{target}"})
                folders = [f for f in folders if f != target]
        sizes = {f.name: f.messages for f in snapshot.folders}
        per_folder = []
        for folder in folders:
            if sizes.get(folder) == 0:
                continue
            query = search_query(rule, folder, now, apply)
            sel = session.select_candidates(folder, query)
            if unjudged:
                first = [folder, *(f for f in probed if f != folder)]
                check_clock(session, account, first, state, now, clock_slack, sel)
                unjudged = False
            if explain and not sel.candidates and sel.age_applied and session.protocol == "imap":
                sel = explain_empty(session, query, sel)  # one line on why nothing
            sel, guard_notes = _dated(session, account, sel, state, now)
            notes += guard_notes
            per_folder.append(sel)
        selections.append(RuleSelection(name, tuple(per_folder), tuple(notes)))
    if unjudged:  # nothing searched: the evidence is still recorded (and a bad clock reported)
        check_clock(session, account, probed, state, now, clock_slack)
    return plan(snapshot, selections, used, Limits.of(account, used), now)


def explain_empty(
    session: MailboxSession, query: SearchQuery, sel: FolderSelection
) -> FolderSelection:
    """``sel`` (which has no candidates) with a note when protections held back what the rule's
    age and size would select. Costs one search (two with both protections), only here."""
    if not (query.exclude_flagged or query.exclude_unseen):
        return sel
    bare = replace(query, exclude_flagged=False, exclude_unseen=False)
    total = len(session.select_candidates(sel.folder, bare).candidates)
    if total == 0:
        return sel
    if not query.exclude_flagged:
        why = "all unseen (keep_unseen)"
    elif not query.exclude_unseen:
        why = "all flagged (keep_flagged)"
    else:
        unflagged = len(
            session.select_candidates(sel.folder, replace(query, exclude_unseen=False)).candidates
        )
        if unflagged == total:
            why = "all unseen (keep_unseen)"
        elif unflagged == 0:
            why = "all flagged (keep_flagged)"
        else:
            why = f"{total - unflagged} flagged and {unflagged} unseen (keep_flagged, keep_unseen)"
    note = f"{sel.folder}: {count(total, 'candidate')}, {why}"
    return replace(sel, notes=(*sel.notes, note))
