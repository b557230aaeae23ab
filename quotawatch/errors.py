"""The exception hierarchy of quotawatch; every message is built in ``__init__``."""

from __future__ import annotations

import re
import socket
import ssl


class QuotawatchError(Exception):
    """Base class of every error quotawatch raises on purpose."""

    #: short machine-readable cause, used as the ``reason`` label of error metrics
    reason = "error"


class ConfigError(QuotawatchError):
    """Raised when a config file cannot be read or does not validate; carries every problem."""

    reason = "config"

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One ``FILE: dotted.path: message`` line per problem."""
        return [
            f"{self.path}: {loc}: {msg}" if loc else f"{self.path}: {msg}"
            for loc, msg in self.problems
        ]


class SecretError(QuotawatchError):
    """Raised when a password file, credential or variable cannot be used; names it, never its value."""

    reason = "config"

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        super().__init__(f"{source}: {problem}")


class CaFileError(QuotawatchError):
    """Raised when a configured ``ca_file`` is missing, unreadable or holds no CA certificate."""

    reason = "config"

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(f"ca_file {path}: {problem}")


class MailboxError(QuotawatchError):
    """Base class of errors talking to a mail server; the message names the account."""

    reason = "protocol"

    def __init__(self, account: str, detail: str) -> None:
        self.account = account
        self.detail = detail
        super().__init__(f"{account}: {detail}")


class ConnectError(MailboxError):
    """Raised when the server cannot be reached (refused, unreachable, DNS)."""

    reason = "connect"


class ServerTimeout(MailboxError):
    """Raised when the server does not answer within the configured timeout."""

    reason = "timeout"


class TLSError(MailboxError):
    """Raised when TLS cannot be set up or the certificate does not verify; no credentials were sent."""

    reason = "tls"


class AuthError(MailboxError):
    """Raised when the server refuses the login."""

    reason = "auth"


#: the fixed words of a refused login, the same for every protocol (SMTP too)
LOGIN_REFUSED = "login failed: the server refused the credentials"
#: response codes that may follow them (RFC 5530 for IMAP, RFC 2449/3206 for POP3): nothing
#: else of the server's answer is kept, since a server may echo what it was sent
LOGIN_CODES = frozenset({
    "ALERT", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "CONTACTADMIN", "EXPIRED",
    "INUSE", "LIMIT", "NOPERM", "PRIVACYREQUIRED", "SERVERBUG", "UNAVAILABLE",
    "AUTH", "IN-USE", "LOGIN-DELAY", "SYS/PERM", "SYS/TEMP",
})  # fmt: skip
_CODE = re.compile(r"\[([A-Za-z/-]{1,30})\]")


def login_code(answer: str) -> str:
    """The first known response code in a server's answer to a login (``AUTHENTICATIONFAILED``)."""
    found = _CODE.search(answer)
    code = found.group(1).upper() if found else ""
    return code if code in LOGIN_CODES else ""


class LoginRefused(AuthError):
    """Raised when the server refuses the login; a fixed message with at most a known response
    code, never the exchange (which carried the credentials) nor the server's text."""

    def __init__(self, account: str, answer: str = "") -> None:
        self.code = login_code(answer)
        super().__init__(account, LOGIN_REFUSED + (f" [{self.code}]" if self.code else ""))


class CredentialsNotSent(AuthError):
    """Raised when the credentials could not be sent; names a fixed cause, never what was sent."""

    def __init__(self, account: str, cause: str | BaseException) -> None:
        if isinstance(cause, UnicodeError):
            cause = "encoding"
        elif isinstance(cause, BaseException):
            cause = f"unexpected {type(cause).__name__}"
        super().__init__(account, f"could not send credentials ({cause})")


class TokenError(AuthError):
    """Raised when no OAuth2 access token can be had (refused credential, revoked refresh token);
    the message says what to run, never a token or secret."""


class CapabilityMissing(MailboxError):
    """Raised when the server lacks a capability that an operation needs."""

    reason = "capability"

    def __init__(self, account: str, capability: str, needed_for: str = "") -> None:
        self.capability = capability
        why = f" (needed for {needed_for})" if needed_for else ""
        super().__init__(account, f"server lacks {capability}{why}")


class CommitUnconfirmed(MailboxError):
    """Raised when a command that makes deletions final (POP3 QUIT) was sent but not confirmed."""

    reason = "connect"

    def __init__(self, account: str, command: str, detail: str) -> None:
        super().__init__(
            account,
            f"{command} was sent but not confirmed ({detail}); the server may have deleted "
            "the marked messages",
        )


class ProtocolError(MailboxError):
    """Raised when the server answers a command with an error or something unparseable."""

    reason = "protocol"


class TemporaryServerError(MailboxError):
    """Raised on a server's temporary refusal (POP3 IN-USE, LOGIN-DELAY, SYS/TEMP); retry later."""

    reason = "temporary"


class SafetyStop(QuotawatchError):
    """Raised when a safety check stops a cleanup (a cap hit, UIDVALIDITY changed, unverifiable archive)."""

    reason = "safety"

    def __init__(self, account: str, detail: str) -> None:
        self.account = account
        super().__init__(f"{account}: {detail}")


class StateError(QuotawatchError):
    """Raised when the journal or audit log in ``state_dir`` cannot be written; nothing was touched."""

    reason = "state"

    def __init__(self, account: str, path: str, exc: OSError) -> None:
        self.account = account
        self.path = path
        why = exc.strerror or type(exc).__name__
        super().__init__(f"{account}: cannot write {path} ({why}); nothing changed on the server")


class ClockError(QuotawatchError):
    """Raised when the local clock is not plausible by the server's evidence; cleanup stops, checks go on."""

    reason = "clock"

    def __init__(self, account: str, problem: str) -> None:
        self.account = account
        super().__init__(
            f"{account}: {problem}; cleanup stopped, nothing planned or deleted "
            f"(checks and warnings go on; fix the clock, e.g. NTP)"
        )


class MailError(QuotawatchError):
    """Raised when a warning mail was not accepted by the SMTP server; names the server, never the password."""

    def __init__(self, server: str, detail: str, reason: str = "smtp") -> None:
        self.server = server
        self.detail = detail
        #: connect, timeout, tls, auth, rejected or smtp
        self.reason = reason
        super().__init__(f"SMTP {server}: {detail}")


class MailboxLocked(MailboxError):
    """Raised when another quotawatch process or thread works on the same mailbox: skipped."""

    reason = "locked"

    def __init__(self, account: str, waited: float) -> None:
        super().__init__(
            account,
            f"locked: another quotawatch worker is busy with this mailbox (same server and "
            f"login); skipped after waiting {waited:g}s",
        )


class ShuttingDown(MailboxError):
    """Raised instead of sending a command once the daemon or CLI is stopping; the session is then logged out."""

    reason = "shutdown"

    def __init__(self, account: str) -> None:
        super().__init__(account, "stopping on request; no further commands sent")


def transport_error(account: str, doing: str, exc: OSError | EOFError) -> MailboxError:
    """The MailboxError for a socket or TLS failure while ``doing`` something (any protocol)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason
        return TLSError(account, f"TLS certificate not trusted ({doing}): {why}")
    if isinstance(exc, ssl.SSLError):
        return TLSError(account, f"TLS failed ({doing}): {exc.reason or exc}")
    if isinstance(exc, TimeoutError):
        return ServerTimeout(account, f"timed out ({doing})")
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return ConnectError(account, f"cannot connect ({doing}): {exc.strerror or exc}")
    if isinstance(exc, ConnectionError | EOFError):
        return ConnectError(account, f"connection lost ({doing}): {exc}")
    return ConnectError(account, f"network error ({doing}): {exc.strerror or exc}")
