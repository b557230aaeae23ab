"""SLOW (about a minute): a folder of 200,000 messages, against the real sandbox Dovecot."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.integration import test_retention as base

COUNT = 200_000


def test_a_search_answer_for_200000_messages_is_read_whole(tmp_path: Path, user: Any) -> None:
    """A plain ``UID SEARCH`` answer for this many UIDs is a line of about 1.3 MB, above imaplib's
    1 MB cap ("got more than 1000000 bytes"): ESEARCH ranges, in windows, keep it short. Every
    message is a candidate, so the plan is refused by max_delete_messages, naming all of them."""
    assert "ESEARCH" in base.session_caps(user)
    when = base.NOW - timedelta(days=40)
    body = b"Subject: bulk\r\nMessage-ID: <bulk@example.org>\r\n\r\nx\r\n"
    user.dovecot.deliver_bulk(user.name, "Trash", ((body, when, "S") for _ in range(COUNT)))
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, _ = base.run(config, account, apply=False)
    assert plan.error is not None and f"would remove {COUNT} messages in one run" in plan.error
    assert plan.reason == "plan"
