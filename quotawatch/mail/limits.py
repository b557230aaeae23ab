"""What one mail server may cost quotawatch: caps on lines, literals and answers, and deadlines."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from quotawatch.config import Account
from quotawatch.errors import MailboxError, ProtocolError, ServerTimeout

#: Longest line outside a literal. A plain SEARCH answer of ~1,000,000 UIDs fits; imaplib's own
#: limit (1,000,000 bytes) fails a folder of ~170,000 messages.
MAX_LINE = 8 << 20
#: Largest literal whose size quotawatch did not ask for (header fields, names). MTAs refuse
#: headers far smaller (Postfix: 100 KiB per header).
MAX_LITERAL = 1 << 20
#: Bytes of one command's answer, besides an expected message body.
MAX_ANSWER = 32 << 20
#: Lines of one command's answer (each untagged response is at least one).
MAX_LINES = 500_000
_LITERAL_DIGITS = re.compile(rb"\{(\d+)\}\r\n\Z")


def body_allowance(size: int) -> int:
    """How large the answer for a message of ``size`` bytes (RFC822.SIZE, POP3 LIST) may be."""
    return max(0, size) + max(0, size) // 4 + (64 << 10)


class BoundExceeded(Exception):
    """Raised when a server's answer passes a cap or a deadline; its connection is dropped.

    Not an OSError, so that no library wrapper turns it into "socket error".
    """


class LimitExceeded(BoundExceeded):
    """Raised when an answer is larger than quotawatch allows (line, literal, bytes, lines)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the server sent {what}; connection dropped")


class DeadlineExceeded(BoundExceeded):
    """Raised when a command or the whole account job runs past its deadline."""

    def __init__(self, key: str, seconds: float) -> None:
        self.key = key
        what = "the account job" if key == "job_timeout" else "one command"
        super().__init__(f"{what} took longer than {key} ({seconds:g} s); connection dropped")


def bound_error(account: str, doing: str, exc: BoundExceeded) -> MailboxError:
    """The account's error for a passed bound: ServerTimeout for a deadline, else ProtocolError."""
    if isinstance(exc, DeadlineExceeded):
        return ServerTimeout(account, f"{doing}: {exc}")
    return ProtocolError(account, f"{doing}: {exc}")


class Guard:
    """The budget of one connection: a deadline per command and per account job, and caps on
    each command's answer. :meth:`start_command` is called whenever a command is sent."""

    def __init__(
        self,
        read_timeout: float,
        command_timeout: float,
        job_timeout: float,
        *,
        job_end: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read_timeout = read_timeout
        self.command_timeout = command_timeout
        self.job_timeout = job_timeout
        self._clock = clock
        self.job_end = clock() + job_timeout if job_end is None else job_end
        self.start_command()

    @classmethod
    def for_account(cls, account: Account, job_end: float | None = None) -> Guard:
        """The account's ``timeout``, ``command_timeout`` and ``job_timeout`` (the job starts now
        unless ``job_end``, a :func:`time.monotonic` value, carries an earlier start over)."""
        return cls(account.timeout, account.command_timeout, account.job_timeout, job_end=job_end)

    def start_command(self) -> None:
        """A command was sent: its clock and the caps on its answer start afresh."""
        self.command_end = self._clock() + self.command_timeout
        self.literal_cap = MAX_LITERAL
        self.bytes_left = MAX_ANSWER
        self.lines_left = MAX_LINES

    def expect_body(self, allowance: int) -> None:
        """The current command may return a message body of up to ``allowance`` bytes."""
        self.literal_cap = max(self.literal_cap, allowance)
        self.bytes_left += allowance
        self.lines_left += allowance // 2  # a line holds at least its CRLF

    def timeout(self) -> float:
        """Seconds the next socket operation may wait; DeadlineExceeded when none are left."""
        now = self._clock()
        if now >= self.job_end:
            raise DeadlineExceeded("job_timeout", self.job_timeout)
        if now >= self.command_end:
            raise DeadlineExceeded("command_timeout", self.command_timeout)
        return min(self.read_timeout, self.job_end - now, self.command_end - now)

    def timed_out(self, waited: float) -> DeadlineExceeded | None:
        """After a socket timeout of ``waited`` seconds: the deadline that cut it short, if any
        (else the server was silent for the whole ``timeout``, an ordinary socket timeout)."""
        if waited >= self.read_timeout:
            return None
        if self.job_end <= self.command_end:
            return DeadlineExceeded("job_timeout", self.job_timeout)
        return DeadlineExceeded("command_timeout", self.command_timeout)

    def line(self, line: bytes, max_line: int = MAX_LINE) -> bytes:
        """Count one line read (with its CRLF) against the caps; refuse an absurd literal size."""
        self.lines_left -= 1
        self.bytes_left -= len(line)
        return self.check(line, max_line)

    def check(self, line: bytes, max_line: int) -> bytes:
        """The caps on a line already counted (see :meth:`line`)."""
        if len(line) > max_line:
            raise LimitExceeded(f"a line longer than {max_line} bytes")
        if self.lines_left < 0:
            raise LimitExceeded(f"an answer of more than {MAX_LINES} lines")
        if self.bytes_left < 0:
            raise LimitExceeded("an answer larger than allowed")
        if line.endswith(b"}\r\n") and (m := _LITERAL_DIGITS.search(line)) is not None:
            digits = m.group(1)  # refused before anyone int()s 5,000 digits or allocates that much
            if len(digits) > 15 or int(digits) > self.literal_cap:
                raise LimitExceeded(self._too_big(digits.decode("ascii")[:20]))
        return line

    def _too_big(self, size: str) -> str:
        return f"a literal of {size} bytes (at most {self.literal_cap} expected)"

    def literal(self, size: int) -> int:
        """Accept (and count) a literal of this announced size, or raise LimitExceeded."""
        if size > self.literal_cap:
            raise LimitExceeded(self._too_big(str(size)[:20]))
        self.bytes_left -= size
        if self.bytes_left < 0:
            raise LimitExceeded("an answer larger than allowed")
        return size


class _DeadlineIO(io.RawIOBase):
    """A socket's raw reader that waits no longer than the guard allows, at every receive."""

    def __init__(self, sock: socket.socket, guard: Guard) -> None:
        self._sock = sock
        self._guard = guard

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wait = self._guard.timeout()
        if self._sock.gettimeout() != wait:
            self._sock.settimeout(wait)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            raise self._guard.timed_out(wait) or TimeoutError("timed out") from None


class BoundedReader:
    """Buffered, capped, deadline-bound reading from one socket (a new one after STARTTLS)."""

    def __init__(self, sock: socket.socket, guard: Guard, max_line: int = MAX_LINE) -> None:
        self.sock = sock
        self.guard = guard
        self.max_line = max_line
        self._file = io.BufferedReader(_DeadlineIO(sock, guard), 1 << 16)
        self._readline = self._file.readline
        self._limit = max_line + 1

    def readline(self) -> bytes:
        """One line with its line end (b"" at EOF); a longer line than ``max_line`` raises.
        (:meth:`Guard.line` inlined: this runs for every line of every answer.)"""
        line = self._readline(self._limit)
        guard = self.guard
        guard.lines_left -= 1
        guard.bytes_left -= len(line)
        if (
            guard.lines_left < 0
            or guard.bytes_left < 0
            or len(line) > self.max_line
            or line.endswith(b"}\r\n")
        ):
            guard.check(line, self.max_line)
        return line

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes of an announced literal (fewer only at EOF)."""
        return self._file.read(self.guard.literal(size))


def start_send(sock: socket.socket, guard: Guard) -> float:
    """Before sending a command: its deadline and caps start now, and the send may wait no
    longer than they allow. Returns that wait (for :meth:`Guard.timed_out`)."""
    guard.start_command()
    wait = guard.timeout()
    sock.settimeout(wait)
    return wait


def drop(sock: socket.socket | None) -> None:
    """Cut a connection whose server passed a bound: nothing more is read or sent on it."""
    if sock is None:
        return
    with contextlib.suppress(OSError):  # the owner closes it as usual (ENOTCONN is expected)
        sock.shutdown(socket.SHUT_RDWR)
