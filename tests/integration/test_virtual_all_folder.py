"""A virtual folder (Dovecot's virtual plugin, ``\\All``) is never cleaned, even when named."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sandbox.dovecot import Dovecot, SandboxUser
from tests.integration.test_retention import deliver, folder_names, run, setup, uids_in


def test_a_rule_naming_the_all_folder_leaves_inbox_alone(
    tmp_path: Path, dovecot_virtual: Dovecot
) -> None:
    """Before the fix the plan took INBOX's old mail through ``Virtual/All`` without allow_inbox."""
    user = SandboxUser("virt1", secrets.token_urlsafe(12), dovecot_virtual)
    dovecot_virtual.add_user(user.name, user.password)
    inbox = deliver(user, "INBOX", [(60, "S"), (61, "S"), (62, "S")])
    trash = deliver(user, "Trash", [(60, "S"), (61, "S")])
    assert "Virtual/All" in folder_names(user)
    assert len(uids_in(user, "Virtual/All")) == 5  # the view shows INBOX's mail too
    rules: dict[str, Any] = {
        "by-name": {"folders": ["Virtual/All", "Trash"], "older_than": "30d", "age": "received"},
        "by-glob": {"folders": ["Virtual/*"], "older_than": "30d", "age": "received"},
    }
    config, account, _ = setup(
        tmp_path, user, ["by-name", "by-glob"], rules, max_delete_fraction="100%"
    )
    plan, result = run(config, account, apply=True)
    assert plan.error is None
    assert {a.folder for a in plan.actions} == {"Trash"}
    assert any("'Virtual/All' is a virtual folder" in note for note in plan.notes)
    assert result is not None and not result.errors
    assert uids_in(user, "INBOX") == inbox
    assert len(trash) == 2 and uids_in(user, "Trash") == []
