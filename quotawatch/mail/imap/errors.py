"""Translation of socket, TLS and imapclient exceptions into quotawatch's MailboxError classes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from quotawatch.errors import (
    AuthError,
    ConnectError,
    CredentialsNotSent,
    LoginRefused,
    MailboxError,
    ProtocolError,
    transport_error,
)
from quotawatch.mail.limits import BoundExceeded, bound_error


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def reason(exc: BaseException) -> str:
    """The server's or library's words, without Python's bytes repr."""
    words = text(exc.args[0] if exc.args else exc).strip()
    if len(words) > 2 and words[:2] in ("b'", 'b"') and words[-1] == words[1]:
        words = words[2:-1]
    return "".join(c if c.isprintable() else " " for c in words[:300])


@contextlib.contextmanager
def translate_errors(account: str, doing: str) -> Iterator[None]:
    """Turn socket, TLS and IMAP library exceptions into quotawatch's MailboxError subclasses."""
    try:
        yield
    except MailboxError:
        raise
    except BoundExceeded as exc:
        raise bound_error(account, doing, exc) from None
    except (OSError, EOFError) as exc:  # sockets and TLS
        raise transport_error(account, doing, exc) from None
    except LoginError as exc:
        raise AuthError(account, f"login refused: {reason(exc)}") from None
    except IMAPClientAbortError as exc:  # a BYE or a broken stream: the session is gone
        if reason(exc).startswith("unexpected response"):  # not IMAP (e.g. a garbage greeting)
            raise ProtocolError(account, f"{doing}: {reason(exc)}") from None
        raise ConnectError(account, f"connection lost ({doing}): {reason(exc)}") from None
    except IMAPClientError as exc:
        raise ProtocolError(account, f"server refused ({doing}): {reason(exc)}") from None


@contextlib.contextmanager
def login_errors(account: str) -> Iterator[None]:
    """Like :func:`translate_errors` while credentials are on the wire, with fixed messages only:
    neither the library's words (an encoding error quotes a password character and its position)
    nor the server's (which may echo what it was sent) are kept."""
    try:
        yield
    except MailboxError:
        raise
    except BoundExceeded as exc:  # names a size or a timeout, never what was sent
        raise bound_error(account, "login", exc) from None
    except (OSError, EOFError) as exc:  # sockets and TLS: the operating system's words
        raise transport_error(account, "login", exc) from None
    except IMAPClientAbortError:
        raise ConnectError(account, "connection lost (login)") from None
    except IMAPClientError as exc:  # LoginError and any NO/BAD to LOGIN or AUTHENTICATE
        raise LoginRefused(account, reason(exc)) from None
    except Exception as exc:  # noqa: BLE001 - replaced by a message that cannot hold a secret
        raise CredentialsNotSent(account, exc) from None
