"""What one check sees of a logged-in mailbox: its quota and its folders with sizes."""

from __future__ import annotations

from datetime import datetime

from quotawatch.mail.session import MailboxSession
from quotawatch.model import Snapshot


def snapshot(session: MailboxSession, now: datetime) -> Snapshot:
    """Quota and folders of a logged-in session."""
    quota, notes = session.quota()
    return Snapshot(session.account, session.protocol, now, quota, session.folders(), notes)
