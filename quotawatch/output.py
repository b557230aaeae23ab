"""Human-readable tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from quotawatch.model import AccountReport
from quotawatch.text import escape, table
from quotawatch.units import format_percent, format_size

if TYPE_CHECKING:
    from quotawatch.retention.planner import Plan
    from quotawatch.retention.results import CleanupResult


def _quota_line(report: AccountReport) -> str:
    snap = report.snapshot
    assert snap is not None
    if not snap.quota:
        return "quota: none reported" + (f" ({'; '.join(snap.notes)})" if snap.notes else "")
    parts = []
    for q in snap.quota:
        if q.resource == "STORAGE":
            used = f"{format_size(q.usage)} of {format_size(q.limit)}"
        else:
            used = f"{q.usage} of {q.limit} {q.resource.lower()}"
        parts.append(f"{used} ({format_percent(q.ratio)})")
    return "quota: " + ", ".join(parts)


def render_check(reports: Sequence[AccountReport], max_folders: int | None = None) -> str:
    """The ``check`` report: a summary table, then each account's folders largest first."""
    summary = []
    for r in reports:
        snap = r.snapshot
        storage = snap.storage() if snap else None
        summary.append(
            [
                r.name,
                r.protocol,
                "ok" if r.ok else "FAILED",
                format_size(storage.usage) if storage else "-",
                format_size(storage.limit) if storage else "-",
                format_percent(snap.usage_ratio if snap else None),
                str(sum(f.messages for f in snap.folders)) if snap else "-",
            ]
        )
    out = [
        table(
            ["ACCOUNT", "PROTO", "STATUS", "USED", "LIMIT", "USE%", "MESSAGES"],
            summary,
            right=(3, 4, 5, 6),
        )
    ]
    for r in reports:
        out.append("")
        if not r.ok:
            out.append(f"{r.name}: FAILED: {escape(r.error or '')}")
            continue
        assert r.snapshot is not None
        out.append(f"{r.name}: {_quota_line(r)}")
        folders = r.snapshot.folders_by_size()
        shown = folders if max_folders is None else folders[:max_folders]
        limit = r.snapshot.storage()
        rows = [
            [
                escape(f.name),
                f.special_use or "",
                str(f.messages),
                format_size(f.size_bytes),
                format_percent(f.size_bytes / limit.limit if limit else None),
            ]
            for f in shown
        ]
        out.append(
            table(
                ["FOLDER", "USE", "MESSAGES", "SIZE", "OF QUOTA"],
                rows,
                right=(2, 3, 4),
                indent="  ",
            )
        )
        if len(shown) < len(folders):
            out.append(f"  ... {len(folders) - len(shown)} smaller folders not shown")
    return "\n".join(out)


def render_plans(
    runs: Sequence[tuple[Plan, CleanupResult | None]], *, applied: bool = False
) -> str:
    """``plan`` / ``cleanup``: per account and rule, messages, bytes and projected quota after."""
    out: list[str] = []
    for plan, result in runs:
        if out:
            out.append("")
        if plan.error and not plan.actions and plan.usage_before is None and not plan.notes:
            out.append(f"{plan.account}: FAILED: {escape(plan.error)}")
            continue
        head = (
            f"{plan.account}: quota {format_percent(plan.usage_before)} -> "
            f"{format_percent(plan.usage_after)} after the plan "
            f"({plan.messages} messages, {format_size(plan.pending_bytes)})"
        )
        out.append(head)
        out += [f"  WARNING: {escape(w)}" for w in plan.warnings]
        if plan.error:
            out.append(f"  STOPPED: {escape(plan.error)}")
        rows = [
            [a.rule, escape(a.folder), escape(a.action), str(len(a.uids)), format_size(a.bytes)]
            for a in plan.actions
        ]
        if rows:
            headers = ["RULE", "FOLDER", "ACTION", "MESSAGES", "SIZE"]
            out.append(table(headers, rows, right=(3, 4), indent="  "))
        elif not plan.error:
            out.append("  nothing to do")
        out += [f"  note: {escape(n)}" for n in plan.notes]
        if result is not None:
            done = ", ".join(
                f"{escape(d.action)} {d.messages}"
                + (f" of {d.planned} planned" if d.planned != d.messages else "")
                + (f" ({d.uncertain} unconfirmed)" if d.uncertain else "")
                + f" from {escape(d.folder)} ({format_size(d.bytes)})"
                for d in result.done
            )
            freed = "unknown" if result.freed_bytes is None else format_size(result.freed_bytes)
            out.append(f"  done: {done or 'nothing'}; quota freed: {freed}")
            if result.reconciled:
                out.append(f"  reconciled: {result.reconciled} messages of an interrupted earlier "
                           "run were removed then (audited now)")  # fmt: skip
            out += [f"  ERROR: {escape(e)}" for e in result.errors]
    if runs and not applied and any(p.actions for p, _ in runs):
        out += ["", "(dry run: nothing changed; run cleanup --apply to do this)"]
    return "\n".join(out)
