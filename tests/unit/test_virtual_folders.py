"""Virtual folders (\\All, \\Flagged, \\Important, Gmail's All Mail) are never a rule's target."""

from __future__ import annotations

from typing import Any

import pytest

from quotawatch.config import Rule, parse_config
from quotawatch.errors import ConfigError
from quotawatch.model import FolderInfo
from quotawatch.retention.rules import resolve_folders

FOLDERS = (
    FolderInfo("INBOX", 5, 0),
    FolderInfo("Trash", 5, 0, "\\Trash"),
    FolderInfo("Virtual/All", 5, 0, "\\All"),
    FolderInfo("Virtual/Flagged", 5, 0, "\\Flagged"),
    FolderInfo("[Gmail]/All Mail", 5, 0),  # no SPECIAL-USE from this server: known by name
    FolderInfo("[Gmail]/Important", 5, 0, "\\Important"),
)


def rule(**kw: Any) -> Rule:
    return Rule.model_validate({"older_than": "30d", **kw})


@pytest.mark.parametrize(
    "entry", ["Virtual/All", "Virtual/Flagged", "[Gmail]/All Mail", "[Gmail]/Important"]
)
def test_a_virtual_folder_named_explicitly_is_skipped_with_a_note(entry: str) -> None:
    names, notes = resolve_folders("r", rule(folders=[entry, "Trash"]), FOLDERS)
    assert names == ["Trash"]
    assert len(notes) == 1 and entry in notes[0] and "virtual" in notes[0]


def test_a_virtual_folder_is_skipped_even_with_allow_inbox() -> None:
    names, _ = resolve_folders("r", rule(folders=["Virtual/*", "*"], allow_inbox=True), FOLDERS)
    assert names == ["INBOX", "Trash"]


@pytest.mark.parametrize("flag", ["\\All", "\\flagged", "\\Important"])
def test_a_virtual_special_use_flag_is_a_config_error(flag: str) -> None:
    data = {
        "accounts": [
            {"name": "a", "host": "h", "username": "u", "password_file": "/p", "rules": ["r"]}
        ],
        "rules": {"r": {"folders": ["\\Trash", flag], "older_than": "30d"}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "qw.yaml")
    (line,) = info.value.lines()
    assert line.startswith("qw.yaml: rules.r:") and "virtual" in line and flag in line


def test_a_virtual_move_target_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="virtual"):
        rule(folders=["\\Junk"], action="move:\\All")
