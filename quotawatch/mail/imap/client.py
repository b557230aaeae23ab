"""The IMAPClient that takes its first capability list from the server's greeting, not a command."""

from __future__ import annotations

import imaplib
from typing import Any

import imapclient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS


class _GreetingCapabilities:
    """imaplib sends CAPABILITY right after the greeting, even when the greeting already lists
    them (``* OK [CAPABILITY ...]``, as Dovecot's does): use that list then. Every later read
    (imaplib re-reads after STARTTLS) asks the server; ``read_after_starttls`` records it."""

    untagged_responses: dict[str, list[Any]]
    capabilities: tuple[str, ...]
    _greeted = False
    read_after_starttls = False

    def _get_capabilities(self) -> None:
        if not self._greeted:
            self._greeted = True
            listed = self.untagged_responses.pop("CAPABILITY", None)
            if listed and isinstance(listed[-1], bytes) and listed[-1].strip():
                self.capabilities = tuple(listed[-1].decode("ascii", "replace").upper().split())
                return
            super()._get_capabilities()  # type: ignore[misc]
            return
        super()._get_capabilities()  # type: ignore[misc]
        self.read_after_starttls = True


class _Tls(_GreetingCapabilities, IMAP4_TLS):  # type: ignore[misc]
    pass


class _Plain(_GreetingCapabilities, IMAP4WithTimeout):  # type: ignore[misc]
    pass


class GreetingClient(imapclient.IMAPClient):  # type: ignore[misc]
    """IMAPClient whose imaplib object takes the capabilities from the greeting."""

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _Tls(self.host, self.port, self.ssl_context, timeout)
        return _Plain(self.host, self.port, timeout)
