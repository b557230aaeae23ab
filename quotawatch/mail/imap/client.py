"""The IMAPClient quotawatch uses: capabilities from the greeting, every read capped and deadline-bound."""

from __future__ import annotations

import imaplib
import re
import secrets
from typing import Any

import imapclient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

from quotawatch.mail.limits import BoundedReader, BoundExceeded, Guard, drop, start_send

#: imaplib picks a random tag prefix per connection and compiles a pattern for it (~0.2 ms of
#: CPU a login); tags need only be unique within a connection, so one prefix per process will do
_TAG_PREFIX = imaplib.Int2AP(4096 + secrets.randbelow(61440))
_TAGGED = re.compile(rb"(?P<tag>" + _TAG_PREFIX + rb"\d+) (?P<type>[A-Z]+) (?P<data>.*)", re.ASCII)


class _GreetingCapabilities:
    """imaplib sends CAPABILITY right after the greeting, even when the greeting already lists
    them (``* OK [CAPABILITY ...]``, as Dovecot's does): use that list then. Every later read
    (imaplib re-reads after STARTTLS) asks the server; ``read_after_starttls`` records it."""

    untagged_responses: dict[str, list[Any]]
    capabilities: tuple[str, ...]
    _greeted = False
    read_after_starttls = False

    def _connect(self) -> None:
        """imaplib's, with the process's tag pattern instead of one compiled per connection."""
        imap: Any = self
        imap.tagpre, imap.tagre = _TAG_PREFIX, _TAGGED
        imap._cmd_log_len, imap._cmd_log_idx, imap._cmd_log = 10, 0, {}
        imap.welcome = imap._get_response()
        if "PREAUTH" in self.untagged_responses:
            imap.state = "AUTH"
        elif "OK" in self.untagged_responses:
            imap.state = "NONAUTH"
        else:
            raise imap.error(imap.welcome)
        self._get_capabilities()
        for version in ("IMAP4REV1", "IMAP4"):  # imaplib's AllowedVersions
            if version in self.capabilities:
                imap.PROTOCOL_VERSION = version
                return
        raise imap.error("server not IMAP4 compliant")

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


class _Bounded:
    """imaplib's reads and writes (greeting, imapclient's commands, the lean reader in
    ``wire``) through a :class:`BoundedReader`: lines, literals and answers capped, every
    receive bound by the command's and the job's deadline. Passing a bound drops the connection."""

    sock: Any
    guard: Guard
    abort: type[Exception]
    _reader: BoundedReader | None = None

    def _bounded(self) -> BoundedReader:
        reader = self._reader
        if reader is None or reader.sock is not self.sock:  # a new socket after STARTTLS
            reader = self._reader = BoundedReader(self.sock, self.guard)
        return reader

    def readline(self) -> bytes:
        reader = self._reader
        if reader is None or reader.sock is not self.sock:
            reader = self._bounded()
        try:
            return reader.readline()
        except BoundExceeded:
            drop(self.sock)
            raise

    def read(self, size: int) -> bytes:
        try:
            return self._bounded().read(size)
        except BoundExceeded:
            drop(self.sock)
            raise

    def send(self, data: bytes) -> None:
        try:
            wait = start_send(self.sock, self.guard)
            try:
                super().send(data)  # type: ignore[misc]
            except TimeoutError:
                raise self.guard.timed_out(wait) or TimeoutError("timed out") from None
        except BoundExceeded:
            drop(self.sock)
            raise

    def _log(self, line: str) -> None:
        """imaplib keeps a repr of its last commands for debugging, LOGIN's password included:
        quotawatch keeps none."""

    def _get_line(self) -> bytes:
        """imaplib's, without its copy of the last lines (a repr of up to MAX_LINE bytes each)."""
        line = self.readline()
        if not line:
            raise self.abort("socket error: EOF")
        if not line.endswith(b"\r\n"):
            raise self.abort("socket error: unterminated line")
        return line[:-2]


class _Tls(_Bounded, _GreetingCapabilities, IMAP4_TLS):  # type: ignore[misc]
    def __init__(self, host: str, port: int, ctx: Any, timeout: Any, guard: Guard) -> None:
        self.guard = guard
        super().__init__(host, port, ctx, timeout)


class _Plain(_Bounded, _GreetingCapabilities, IMAP4WithTimeout):  # type: ignore[misc]
    def __init__(self, host: str, port: int, timeout: Any, guard: Guard) -> None:
        self.guard = guard
        super().__init__(host, port, timeout)


class GreetingClient(imapclient.IMAPClient):  # type: ignore[misc]
    """IMAPClient whose imaplib object takes the capabilities from the greeting and reads
    everything under ``guard`` (the greeting's deadline starts when the connection does)."""

    def __init__(self, host: str, *, guard: Guard, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        self.guard.start_command()  # the greeting is the first answer
        if self.ssl:
            return _Tls(self.host, self.port, self.ssl_context, timeout, self.guard)
        return _Plain(self.host, self.port, timeout, self.guard)
