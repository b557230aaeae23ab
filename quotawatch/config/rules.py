"""Retention rules: which messages in which folders may go, and how."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from quotawatch.config.base import Strict
from quotawatch.model import SPECIAL_USE_FLAGS, VIRTUAL_FLAGS
from quotawatch.units import ByteSize, Duration, Percent


def check_folder_name(name: str) -> str:
    """Refuse folder names with control characters (CR, LF, NUL, ...): no server has them."""
    bad = [c for c in name if ord(c) < 32 or ord(c) == 0x7F]
    if bad:
        raise ValueError(
            f"folder name {name!r} contains a control character ({bad[0]!r}); "
            "folder names cannot contain CR, LF, NUL or other control characters"
        )
    if not name.strip():
        raise ValueError("folder name is empty")
    return name


FolderName = Annotated[str, AfterValidator(check_folder_name)]


class Rule(Strict):
    """A retention rule: which messages in which folders may go, and how."""

    folders: list[FolderName] = Field(
        min_length=1,
        description="Folder names, shell-style globs, or special-use flags (\\Trash, \\Junk, ...), "
        "in order of sacrifice.",
        examples=[["\\Trash"], ["\\Junk", "\\Trash", "INBOX"]],
    )
    older_than: Duration | None = Field(
        None, description="Only messages older than this (at least 1d).", examples=["30d"]
    )
    age: Literal["saved", "received", "sent"] = Field(
        "saved",
        description="saved = time in this folder; received = INTERNALDATE; sent = Date header.",
        examples=["saved"],
    )
    larger_than: ByteSize | None = Field(
        None, description="Only messages larger than this.", examples=["5MB"]
    )
    when_above: Percent | None = Field(
        None,
        description="Quota-driven: act only when the fullest quota resource is above this.",
        examples=["90%"],
    )
    down_to: Percent | None = Field(
        None,
        description="With when_above: free until projected usage is below this.",
        examples=["80%"],
    )
    order: Literal["oldest", "largest"] = Field(
        "oldest", description="With when_above: which messages go first.", examples=["oldest"]
    )
    action: str = Field(
        "delete", description="delete | move:<folder> | archive", examples=["delete"]
    )
    archive_dir: str | None = Field(
        None,
        description="With action archive: local Maildir root; {account} is replaced.",
        examples=["/srv/mail-archive/{account}"],
    )
    keep_flagged: bool = Field(True, description="Never touch flagged messages.", examples=[True])
    keep_unseen: bool | None = Field(
        None,
        description="Never touch unseen messages (default: true for INBOX, false elsewhere).",
        examples=[True],
    )
    keep_newer_than: Duration = Field(
        timedelta(days=1), description="Never touch messages younger than this.", examples=["1d"]
    )
    allow_inbox: bool = Field(
        False, description="Required for a rule that touches INBOX.", examples=[False]
    )
    max_delete_fraction: Percent | None = Field(
        None,
        description="Override the account's max_delete_fraction for the folders this rule acts on "
        "(e.g. 100% for a Trash rule, where removing everything old is expected).",
        examples=["100%"],
    )

    @field_validator("action")
    @classmethod
    def _check_action(cls, v: str) -> str:
        if v in ("delete", "archive"):
            return v
        if v.startswith("move:") and v[5:].strip():
            check_folder_name(v[5:].strip())
            return v
        raise ValueError("action must be delete, archive, or move:<folder>")

    @field_validator("older_than")
    @classmethod
    def _check_older_than(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(days=1):
            raise ValueError("older_than must be at least 1d")
        return v

    @model_validator(mode="after")
    def _check_rule(self) -> Rule:
        if (self.when_above is None) != (self.down_to is None):
            raise ValueError("when_above and down_to go together")
        if (
            self.when_above is not None
            and self.down_to is not None
            and self.down_to >= self.when_above
        ):
            raise ValueError(
                f"down_to ({self.down_to:.0%}) must be below when_above ({self.when_above:.0%})"
            )
        if self.older_than is None and self.when_above is None and self.larger_than is None:
            raise ValueError(
                "a rule needs older_than, larger_than or when_above/down_to; "
                "otherwise it would select every message"
            )
        if self.action == "archive" and not self.archive_dir:
            raise ValueError("action archive needs archive_dir")
        if self.action != "archive" and self.archive_dir:
            raise ValueError("archive_dir is only used with action archive")
        if any(f.upper() == "INBOX" for f in self.folders) and not self.allow_inbox:
            raise ValueError("this rule touches INBOX; set allow_inbox: true to permit it")
        for f in self.folders:
            if f.startswith("\\") and f.lower() not in {x.lower() for x in SPECIAL_USE_FLAGS}:
                raise ValueError(
                    f"unknown special-use flag {f!r}; known: {', '.join(SPECIAL_USE_FLAGS)}"
                )
        for f in [*self.folders, self.move_target or ""]:
            if f.lower() in {x.lower() for x in VIRTUAL_FLAGS}:
                raise ValueError(
                    f"{f} is a virtual folder (a view of mail kept in other folders, INBOX "
                    "included); it can never be a rule's folder or move target"
                )
        return self

    @property
    def move_target(self) -> str | None:
        return self.action[5:].strip() if self.action.startswith("move:") else None


def pop3_rule_problems(rule: Rule) -> list[tuple[str, str]]:
    """What a rule asks that POP3 cannot do, as (field, message) pairs."""
    problems = []
    for k, folder in enumerate(rule.folders):
        if folder.upper() != "INBOX":
            problems.append((f"folders[{k}]", f"POP3 has only INBOX, not {folder!r}"))
    if rule.age == "received":
        problems.append(("age", "age: received has no meaning for POP3; use saved or sent"))
    if "keep_flagged" in rule.model_fields_set and rule.keep_flagged:
        problems.append(("keep_flagged", "POP3 has no flags; remove keep_flagged"))
    if "keep_unseen" in rule.model_fields_set and rule.keep_unseen:
        problems.append(("keep_unseen", "POP3 has no seen flag; remove keep_unseen"))
    if rule.move_target is not None:
        problems.append(("action", "POP3 has no folders to move to; use delete or archive"))
    return problems
