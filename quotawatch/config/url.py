"""One mailbox named by a URL (``imaps://me@mail.example.org``) as the fields of an account."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from quotawatch.config.account import Account
from quotawatch.config.base import TlsMode

#: scheme -> (protocol, tls)
SCHEMES = {
    "imaps": ("imap", TlsMode.implicit),
    "imap": ("imap", TlsMode.starttls),
    "pop3s": ("pop3", TlsMode.implicit),
    "pop3": ("pop3", TlsMode.starttls),
}


def account_name(username: str, host: str) -> str:
    """An account name from login and host, limited to the characters names may hold."""
    name = re.sub(
        r"[^A-Za-z0-9_.@+-]", "_", f"{username}@{host}" if "@" not in username else username
    )
    return name.lstrip(" ")[:200] or "mailbox"


def parse_mailbox_url(url: str) -> dict[str, Any]:
    """The account fields (name, protocol, host, port, tls, username) of ``url``; ValueError
    with a sentence for anything else, including a password in the URL."""
    text = url.strip()
    if text.lower().endswith(";starttls"):  # the default of imap:// and pop3:// anyway
        text = text[: -len(";starttls")]
        if not text.lower().startswith(("imap://", "pop3://")):
            raise ValueError(f"{url}: ;starttls goes with imap:// or pop3:// only")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url}: not a mailbox URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(
            f"{url}: unknown scheme {parts.scheme + '://' if scheme else '(none)'}; use {known}"
        )
    if parts.password is not None:
        raise ValueError(
            f"{scheme}://: do not put the password in the URL (it would show in the process list "
            "and shell history); it is asked for, or give --password-file"
        )
    if not parts.username:
        raise ValueError(f"{url}: no user name; write {scheme}://USER@HOST")
    if not parts.hostname:
        raise ValueError(f"{url}: no host; write {scheme}://USER@HOST")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url}: only {scheme}://USER@HOST[:PORT] is understood")
    protocol, tls = SCHEMES[scheme]
    username = unquote(parts.username)
    if any(ord(c) < 32 for c in username):
        raise ValueError(f"{url}: the user name contains a control character")
    fields: dict[str, Any] = {
        "name": account_name(username, parts.hostname),
        "protocol": protocol,
        "host": parts.hostname,
        "tls": tls.value,
        "username": username,
    }
    if port is not None:
        fields["port"] = port
    return fields


#: the in-memory "variable" a prompted password is handed over in (never put into os.environ)
PROMPTED = "QUOTAWATCH_PROMPTED_PASSWORD"


def url_account(url: str, password_file: str | None, ca_file: str | None) -> Account:
    """The Account of ``url``: its password from ``password_file``, else from a prompt (handed over
    as the in-memory variable PROMPTED); ValueError or a pydantic ValidationError if invalid."""
    fields = parse_mailbox_url(url)
    if password_file:
        fields["password_file"] = str(Path(password_file).absolute())
    else:
        fields["password_env"] = PROMPTED
    if ca_file:
        fields["ca_file"] = str(Path(ca_file).absolute())
    return Account.model_validate(fields)
