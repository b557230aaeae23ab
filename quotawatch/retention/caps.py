"""Per-run safety caps: the share of a folder and the number of messages one run may remove (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from quotawatch.config import AccountFields, Rule
from quotawatch.config.profiles import GMAIL_IMAP_DOWNLOAD_PER_DAY

if TYPE_CHECKING:
    from quotawatch.retention.planner import PlannedAction, RuleSelection


@dataclass(frozen=True)
class Limits:
    """Per-run safety caps of one account."""

    max_delete_fraction: float = 0.5
    max_delete_messages: int = 5000
    #: per-rule overrides of max_delete_fraction (a rule's own ``max_delete_fraction``)
    rule_fractions: Mapping[str, float] = field(default_factory=dict)
    #: bytes the provider lets the account download a day (Gmail over IMAP): not a cap, a
    #: plan that archives near or above it gets a note or a warning
    download_per_day: int | None = None

    @classmethod
    def of(cls, account: AccountFields, rules: Mapping[str, Rule] | None = None) -> Limits:
        overrides = {
            name: rule.max_delete_fraction
            for name, rule in (rules or {}).items()
            if rule.max_delete_fraction is not None
        }
        gmail = account.provider == "gmail" and account.protocol == "imap"
        return cls(
            account.max_delete_fraction,
            account.max_delete_messages,
            overrides,
            GMAIL_IMAP_DOWNLOAD_PER_DAY if gmail else None,
        )

    def fraction_for(self, rules: Sequence[str]) -> float:
        """The strictest fraction cap among the rules acting on one folder."""
        return min(self.rule_fractions.get(r, self.max_delete_fraction) for r in rules)


_VERBS = {"delete": "delete", "archive": "archive and delete"}


def cap_problem(
    actions: Sequence[PlannedAction], selections: Sequence[RuleSelection], limits: Limits
) -> str | None:
    """The first safety cap the actions exceed, as a sentence; None when within the caps."""
    total = sum(len(a.uids) for a in actions)
    if total > limits.max_delete_messages:
        names = ", ".join(dict.fromkeys(a.rule for a in actions))
        return (
            f"rules {names} would remove {total} messages in one run, above "
            f"max_delete_messages {limits.max_delete_messages}; nothing done"
        )
    sizes: dict[str, int] = {}
    for sel in selections:
        for fs in sel.folders:
            sizes[fs.folder] = max(sizes.get(fs.folder, 0), fs.total_messages)
    by_folder: dict[str, list[PlannedAction]] = {}
    for a in actions:
        by_folder.setdefault(a.folder, []).append(a)
    for folder, group in by_folder.items():
        count = sum(len(a.uids) for a in group)
        size = max(sizes.get(folder, 0), count)
        rules = list(dict.fromkeys(a.rule for a in group))
        allowed = limits.fraction_for(rules)
        if count / size > allowed:
            verbs = {_VERBS.get(a.action, "move away") for a in group}
            verb = verbs.pop() if len(verbs) == 1 else "remove"
            who = f"rule {rules[0]}" if len(rules) == 1 else f"rules {', '.join(rules)}"
            return (
                f"{who} would {verb} {count} of {size} messages ({count / size:.0%}) in {folder}, "
                f"above max_delete_fraction {allowed:.0%}; nothing done"
            )
    return None
