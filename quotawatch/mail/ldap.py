"""An LDAP directory as an account source: TLS verified, a simple bind, one paged search.

python-ldap (the ``ldap`` extra) is imported only when a directory is read.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from quotawatch.config.files import ca_file_problem
from quotawatch.config.ldap import LdapSource
from quotawatch.config.sources import Listed, usable_username
from quotawatch.errors import (
    AuthError,
    CaFileError,
    ConnectError,
    MailboxError,
    ProtocolError,
    ServerTimeout,
    TLSError,
)
from quotawatch.extras import require
from quotawatch.mail.tls import tls_context

log = logging.getLogger(__name__)

#: the most entries one read accepts (a directory that never stops cannot fill the memory)
MAX_ENTRIES = 2_000_000
#: python-ldap's scope constants (SCOPE_BASE, SCOPE_ONELEVEL, SCOPE_SUBTREE)
SCOPES = {"base": 0, "one": 1, "sub": 2}
PAGED_RESULTS = "1.2.840.113556.1.4.319"

Entry = tuple[str | None, Mapping[str, Sequence[bytes]]]


def load_ldap() -> Any:
    """python-ldap, or MissingExtra naming ``pip install 'quotawatch[ldap]'``."""
    feature = "account_sources with ldap"
    module = require("ldap", extra="ldap", feature=feature, package="python-ldap")
    require("ldap.controls", extra="ldap", feature=feature, package="python-ldap")
    return module


def _first(attrs: Mapping[str, Sequence[bytes]], name: str) -> bytes | None:
    """The first value of attribute ``name`` (attribute names are case-insensitive)."""
    wanted = name.lower()
    for key, values in attrs.items():
        if key.lower() == wanted and values:
            return values[0]
    return None


def listed_users(
    entries: Iterable[Entry], username_attribute: str, email_attribute: str | None, where: str
) -> list[Listed]:
    """The users of a search's entries, in order: each entry's first ``username_attribute``
    value and first ``email_attribute`` value.

    Entries without the attribute (or references) are left out; a value that is not UTF-8 or
    cannot be a username is skipped with a warning, as is a username seen before.
    """
    out: list[Listed] = []
    seen: set[str] = set()
    missing = skipped = 0
    for dn, attrs in entries:
        if dn is None:
            continue  # a search reference
        raw = _first(attrs, username_attribute)
        if raw is None:
            missing += 1
            continue
        try:
            user = raw.decode("utf-8")
        except UnicodeDecodeError:
            user = ""
        why = (
            "not usable as a username" if not usable_username(user)
            else "listed twice" if user in seen else None
        )  # fmt: skip
        if why:
            skipped += 1
            if skipped <= 5:
                log.warning("%s: skipping %s %r of %s: %s", where, username_attribute,
                            raw[:100], dn, why)  # fmt: skip
            continue
        seen.add(user)
        email = None
        if email_attribute:
            value = _first(attrs, email_attribute)
            email = value.decode("utf-8", "replace") if value is not None else None
        out.append(Listed(user, email))
    if skipped > 5:
        log.warning("%s: skipped %d more entries", where, skipped - 5)
    if missing:
        log.info("%s: %d entries have no %s and give no account", where, missing,
                 username_attribute)  # fmt: skip
    return out


def failure(exc: Exception, name: str, secret: str | None = None) -> MailboxError:
    """The quotawatch error for a python-ldap exception: reason, and the server's words
    (never the bind password, should a server echo it)."""
    info: dict[str, Any] = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    kind = type(exc).__name__
    desc = str(info.get("desc") or kind)
    detail = " ".join(str(info.get("info") or "").split())[:200]
    if detail and detail != "(unknown error code)":
        desc = f"{desc} ({detail})"
    if secret:
        desc = desc.replace(secret, "***")
    if kind == "INVALID_CREDENTIALS":
        return AuthError(name, "the bind was refused: wrong bind_dn or bind password")
    if kind in ("INAPPROPRIATE_AUTH", "INSUFFICIENT_ACCESS", "STRONG_AUTH_REQUIRED",
                "CONFIDENTIALITY_REQUIRED", "UNWILLING_TO_PERFORM", "AUTH_METHOD_NOT_SUPPORTED"):  # fmt: skip
        return AuthError(name, f"the directory refused: {desc}")
    if kind in ("TIMEOUT", "TIMELIMIT_EXCEEDED"):
        return ServerTimeout(name, f"no answer in time: {desc}")
    if kind in ("SERVER_DOWN", "CONNECT_ERROR"):
        return ConnectError(name, f"cannot reach the directory: {desc}")
    if kind == "SIZELIMIT_EXCEEDED":
        return ProtocolError(
            name, "the server's size limit cut the list (it does not page past it); "
            "refusing a partial list",
        )  # fmt: skip
    if kind == "ADMINLIMIT_EXCEEDED":
        return ProtocolError(name, f"{desc}: the server may refuse the page size; lower page_size")
    if kind == "NO_SUCH_OBJECT":
        return ProtocolError(name, f"the search base does not exist: {desc}")
    return ProtocolError(name, f"the directory answered: {desc}")


class Ldap:
    """One configured directory; each read opens its own connection, so threads may share it."""

    def __init__(self, settings: LdapSource, password: SecretStr | None = None) -> None:
        if settings.bind_dn is not None and not password:
            raise ValueError("a bind_dn needs its bind password")
        self.settings = settings
        self._password = password
        self.name = f"ldap {settings.label}"

    def __repr__(self) -> str:
        return f"Ldap({self.settings.label!r})"

    def users(self) -> list[Listed]:
        """Every user the search lists, from the first server that answers."""
        if self.settings.ca_file is not None:
            problem = ca_file_problem(self.settings.ca_file)
            if problem:
                raise CaFileError(str(self.settings.ca_file), problem)
        ldap = load_ldap()
        errors: list[MailboxError] = []
        for number, url in enumerate(self.settings.url, 1):
            try:
                return self._read(ldap, url)
            except (ConnectError, ServerTimeout, TLSError) as exc:
                errors.append(exc)  # another server may answer; a refusal would not change
                if number < len(self.settings.url):
                    log.warning("%s; trying the next server", exc)
        if len(errors) == 1:
            raise errors[0]
        every = "; ".join(f"{e.account.removeprefix('ldap ')}: {e.detail}" for e in errors)
        raise type(errors[-1])(self.name, f"no server answered: {every}")

    # ------------------------------------------------------------------ one server
    def _read(self, ldap: Any, url: str) -> list[Listed]:
        name = f"ldap {_host(url)}"
        secret = self._password.get_secret_value() if self._password else None
        try:
            conn = self._connect(ldap, url)
        except (ldap.LDAPError, ValueError) as exc:  # libldap refused an option
            raise TLSError(name, f"cannot set up TLS: {type(exc).__name__}: {exc}") from None
        try:
            starttls = self.settings.uses_starttls(url)
            if starttls:
                try:
                    conn.start_tls_s()
                except ldap.SERVER_DOWN as exc:  # no connection at all: nothing was sent
                    raise failure(exc, name) from None
                except ldap.LDAPError as exc:
                    raise _tls_failure(exc, name) from None
            try:
                conn.simple_bind_s(self.settings.bind_dn or "", secret or "")
            except ldap.SERVER_DOWN as exc:
                if urlsplit(url).scheme == "ldaps" and _reachable(url, self.settings.timeout):
                    raise TLSError(name, _why_not_tls(url, self.settings)) from None
                raise failure(exc, name) from None
            except ldap.LDAPError as exc:
                raise failure(exc, name, secret) from None
            try:
                entries = self._search(ldap, conn, name)
            except ldap.LDAPError as exc:
                raise failure(exc, name, secret) from None
        finally:
            with contextlib.suppress(Exception):  # closing a connection that may have failed
                conn.unbind_s()
        where = f"source ldap {self.settings.label}"
        return listed_users(
            entries, self.settings.username_attribute, self.settings.email_attribute, where
        )

    def _connect(self, ldap: Any, url: str) -> Any:
        """A connection object with TLS required and verified (nothing is sent yet)."""
        s = self.settings
        conn = ldap.initialize(url)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_REFERRALS, 0)  # never bind to a server a referral names
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, s.timeout)
        conn.set_option(ldap.OPT_TIMEOUT, s.timeout)
        conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)  # also the host name
        conn.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, ldap.OPT_X_TLS_PROTOCOL_TLS1_2)
        if s.ca_file is not None:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(s.ca_file))
        else:  # the system store, as every other TLS connection of quotawatch uses
            paths = ssl.get_default_verify_paths()
            if paths.cafile:
                conn.set_option(ldap.OPT_X_TLS_CACERTFILE, paths.cafile)
            elif paths.capath:
                conn.set_option(ldap.OPT_X_TLS_CACERTDIR, paths.capath)
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # a fresh TLS context with these settings
        return conn

    def _search(self, ldap: Any, conn: Any, name: str) -> list[Entry]:
        """Every entry, page by page (Simple Paged Results); a server that ignores the control
        answers in one go, and one that cuts the list raises SIZELIMIT_EXCEEDED."""
        from ldap.controls import SimplePagedResultsControl

        s = self.settings
        attrs = [s.username_attribute, *([s.email_attribute] if s.email_attribute else [])]
        page = SimplePagedResultsControl(False, size=s.page_size, cookie=b"")
        entries: list[Entry] = []
        while True:
            msgid = conn.search_ext(s.base, SCOPES[s.scope], s.filter, attrs,
                                    serverctrls=[page], timeout=s.timeout)  # fmt: skip
            _type, data, _msgid, controls = conn.result3(msgid, timeout=s.timeout)
            entries.extend(data)
            if len(entries) > MAX_ENTRIES:
                raise ProtocolError(name, f"more than {MAX_ENTRIES} entries; narrow the filter")
            cookie = next(
                (c.cookie for c in controls or () if c.controlType == PAGED_RESULTS), None
            )
            if not cookie:
                return entries
            page.cookie = cookie


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _default_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (636 if parts.scheme == "ldaps" else 389)


def _reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to the server opens (a failed ldaps:// bind: TLS or network?)."""
    try:
        with socket.create_connection((urlsplit(url).hostname or "", _default_port(url)), timeout):
            return True
    except OSError:
        return False


def _why_not_tls(url: str, settings: LdapSource) -> str:
    """Why TLS to an ldaps:// server failed, in the words of Python's verifying handshake."""
    host = urlsplit(url).hostname or ""
    try:
        ctx = tls_context(settings.ca_file)
        with (
            socket.create_connection((host, _default_port(url)), settings.timeout) as sock,
            ctx.wrap_socket(sock, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        return f"certificate not trusted: {exc.verify_message}"
    except (ssl.SSLError, OSError) as exc:
        return f"TLS failed: {getattr(exc, 'reason', None) or type(exc).__name__}"
    return "TLS failed (the certificate or the TLS version was not accepted)"


def _tls_failure(exc: Exception, name: str) -> TLSError:
    """StartTLS that failed: an error, never a fallback to plaintext (no bind was sent)."""
    kind = type(exc).__name__
    if kind == "CONNECT_ERROR":  # the handshake failed
        why = ("the certificate was not accepted (not trusted by ca_file or the system store, "
               "or not issued for this host name), or TLS could not be negotiated")  # fmt: skip
    elif kind in ("PROTOCOL_ERROR", "UNAVAILABLE", "OPERATIONS_ERROR", "UNWILLING_TO_PERFORM"):
        why = "the server does not offer StartTLS"
    else:
        why = failure(exc, name).detail
    return TLSError(name, f"StartTLS failed: {why}; not continuing without TLS")
