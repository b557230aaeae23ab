"""An IMAP peer that takes OAuth2 logins and ends sessions as Exchange does when their token expired.

:class:`ExpiringServer` is a ``normal`` :class:`~sandbox.hostile.HostileServer` that also accepts
``AUTHENTICATE XOAUTH2`` and ``AUTHENTICATE OAUTHBEARER`` (with or without SASL-IR) and records
the bearer token of every login in :attr:`ExpiringServer.logins`, in order. ``bye_after[i]`` says
how many commands the *i*-th login (counted over all connections) gets answered; the next one is
answered ``* BYE Session invalidated - AccessTokenExpired`` and the connection closed. Logins
past the end of ``bye_after`` are served normally.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import threading
from collections.abc import Sequence
from typing import Any

from sandbox.hostile import IMAP_CAPABILITIES, HostileServer, _Session

__all__ = ["EXPIRED_BYE", "ExpiringServer"]

EXPIRED_BYE = b"* BYE Session invalidated - AccessTokenExpired\r\n"
_BEARER = re.compile(rb"auth=Bearer ([^\x01]+)\x01")
_MECHANISMS = (b"XOAUTH2", b"OAUTHBEARER")


class ExpiringServer(HostileServer):
    """See the module docstring; ``logins`` holds (login number, connection number, token)."""

    def __init__(self, bye_after: Sequence[int | None] = (), **kwargs: Any) -> None:
        super().__init__("imap", "normal", **kwargs)
        self.bye_after = tuple(bye_after)
        self.logins: list[tuple[int, int, str]] = []
        self.byes = 0
        self._left: dict[int, int | None] = {}  # id(session) -> commands it may still send
        self._local = threading.local()  # each connection is served in its own thread

    @property
    def tokens(self) -> list[str]:
        """The bearer token of each login, in order."""
        with self._lock:
            return [token for _n, _c, token in self.logins]

    def _serve(self, sock: socket.socket, number: int) -> None:
        self._local.number = number
        super()._serve(sock, number)

    def _serve_command(self, s: _Session, command: bytes) -> bool:
        if not super()._serve_command(s, command):
            return False
        with self._lock:
            left = self._left.get(id(s))
            if left is not None:
                self._left[id(s)] = left - 1
        if left is None or left > 0:
            return True
        with self._lock:
            self.byes += 1
        s.send(EXPIRED_BYE)
        return False

    def _imap_authenticate(self, s: _Session, tag: bytes, words: list[bytes]) -> bool:
        mechanism = words[1].upper() if len(words) > 1 else b""
        if mechanism not in _MECHANISMS:
            return super()._imap_authenticate(s, tag, words)
        if len(words) > 2:
            answer: bytes | None = words[2]
        else:
            answer = s.read_line() if s.send(b"+ \r\n") else None
        if answer is None:
            return False
        try:
            match = _BEARER.search(base64.b64decode(answer.strip(), validate=True))
        except binascii.Error:
            match = None
        if match is None:
            return s.send(tag + b" NO [AUTHENTICATIONFAILED] Invalid SASL response\r\n")
        with self._lock:
            number = len(self.logins)
            self.logins.append((number, self._local.number, match[1].decode("ascii", "replace")))
            self._left[id(s)] = self.bye_after[number] if number < len(self.bye_after) else None
        s.logged_in = True
        return s.send(tag + b" OK [CAPABILITY " + IMAP_CAPABILITIES + b"] Logged in\r\n")
