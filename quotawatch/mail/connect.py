"""The factory that picks a mailbox adapter for an account: IMAP or POP3."""

from __future__ import annotations

from pydantic import SecretStr

from quotawatch.config import Account
from quotawatch.mail.imap.session import ImapSession
from quotawatch.mail.session import MailboxSession


def open_session(account: Account, password: SecretStr) -> MailboxSession:
    """Connect and log in with the protocol the account names."""
    if account.protocol == "pop3":  # poplib and the POP3 adapter load only when needed
        from quotawatch.mail.pop3.session import Pop3Session

        return Pop3Session.connect(account, password)
    return ImapSession.connect(account, password)
