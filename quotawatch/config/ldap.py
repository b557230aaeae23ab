"""Settings of an ``ldap`` account source: which directory servers, how to bind, what to search."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from quotawatch.config.base import Strict

#: an attribute type: a name (``uid``, ``userPrincipalName``) or an OID, no options
_ATTRIBUTE_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)$")


def filter_problem(text: str) -> str | None:
    """Why ``text`` is not an LDAP search filter (RFC 4515), or None; a check without a server.

    Parentheses inside values must be escaped (``\\28``), so the bare ones are the structure:
    they must balance, and the whole filter must be one parenthesised item.
    """
    if not text.startswith("(") or not text.endswith(")"):
        return "must be enclosed in parentheses, e.g. (objectClass=inetOrgPerson)"
    if any(ord(c) < 0x20 for c in text):
        return "must not contain control characters"
    depth = 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0 or (depth == 0 and i != len(text) - 1):
                return "has unbalanced parentheses (escape a literal one as \\28 or \\29)"
    if depth != 0:
        return "has unbalanced parentheses (escape a literal one as \\28 or \\29)"
    if "()" in text:
        return "has an empty item ()"
    return None


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ValueError(f"url must be ldaps://host[:port] or ldap://host[:port], got {url!r}")
    if parts.username or parts.password:
        raise ValueError("url must not carry credentials; use bind_dn and bind_password_*")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"url takes only scheme, host and port (set base, filter, scope): {url!r}")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise ValueError(f"url has an invalid port: {url!r}") from None
    return url


class LdapSource(Strict):
    """A user list from an LDAP directory (OpenLDAP, 389-ds, Active Directory).

    TLS is required and verified: ldaps://, or ldap:// with StartTLS (its failure is an
    error, never a fallback to plaintext). Entries come in pages (Simple Paged Results), so a
    server's size limit does not cut the list; a cut list is an error, never a shorter list.
    """

    url: tuple[str, ...] = Field(
        description="Directory server: ldaps://host[:port] or ldap://host[:port] (StartTLS); "
        "a list is tried in order until one answers (failover).",
        examples=[
            "ldaps://ldap.example.org",
            ["ldap://ldap1.example.org", "ldap://ldap2.example.org"],
        ],
    )
    starttls: bool | None = Field(
        None,
        description="ldap:// only: upgrade with StartTLS (default true; failure is an error). "
        "false sends everything in plaintext and needs allow_insecure_plaintext.",
        examples=[True],
    )
    allow_insecure_plaintext: bool = Field(
        False,
        description="Permit ldap:// with starttls: false (the list, and the bind password if "
        "any, travel unencrypted and unauthenticated).",
        examples=[False],
    )
    ca_file: Path | None = Field(
        None,
        description="PEM file of CAs to trust for the directory instead of the system store; "
        "the certificate and the host name are always checked.",
        examples=["/etc/quotawatch/ca.pem"],
    )
    bind_dn: str | None = Field(
        None,
        description="DN to bind as (a read-only service account); none: anonymous.",
        examples=["cn=quotawatch,ou=services,dc=example,dc=org"],
    )
    bind_password_file: Path | None = Field(
        None,
        description="File holding the bind password (mode 0600 or stricter; one line).",
        examples=["/etc/quotawatch/secrets/ldap"],
    )
    bind_password_env: str | None = Field(
        None, description="Environment variable holding the bind password.", examples=["QW_LDAP"]
    )
    bind_password_credential: str | None = Field(
        None,
        description="systemd credential holding the bind password ($CREDENTIALS_DIRECTORY/NAME).",
        examples=["ldap"],
    )
    base: str = Field(
        description="Search base DN.", examples=["ou=people,dc=example,dc=org"], min_length=1
    )
    filter: str = Field(
        "(objectClass=inetOrgPerson)",
        description="Search filter (RFC 4515); entries it matches become accounts.",
        examples=["(&(objectClass=inetOrgPerson)(mailEnabled=TRUE))"],
    )
    scope: Literal["sub", "one", "base"] = Field(
        "sub",
        description="sub: the base and everything below; one: its direct children; base: it.",
        examples=["sub"],
    )
    username_attribute: str = Field(
        "uid",
        description="Attribute whose (first) value is the username, {user} in the template.",
        examples=["uid", "mail", "sAMAccountName"],
    )
    email_attribute: str | None = Field(
        None,
        description="Attribute whose (first) value is {email} in the template and, unless the "
        "template sets email, the account's email.",
        examples=["mail"],
    )
    page_size: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Entries per page of the paged search (lower it if the server refuses "
        "the page size).",
        examples=[500],
    )
    timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds to wait for connecting, TLS and each answer of the directory.",
        examples=[30],
    )

    @field_validator("url", mode="before")
    @classmethod
    def _urls(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        if not urls:
            raise ValueError("url needs at least one ldaps:// or ldap:// server")
        return tuple(_check_url(u) for u in urls)

    @field_validator("filter")
    @classmethod
    def _check_filter(cls, value: str) -> str:
        problem = filter_problem(value)
        if problem:
            raise ValueError(f"filter {problem}")
        return value

    @field_validator("username_attribute", "email_attribute")
    @classmethod
    def _check_attribute(cls, value: str | None) -> str | None:
        if value is not None and not _ATTRIBUTE_RE.match(value):
            raise ValueError(f"{value!r} is not an attribute name (like uid or mail)")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> LdapSource:
        schemes = {urlsplit(u).scheme for u in self.url}
        if self.starttls and "ldaps" in schemes:
            raise ValueError("starttls is for ldap:// urls; ldaps:// is TLS from the first byte")
        if self.starttls is False and not self.allow_insecure_plaintext:
            raise ValueError(
                "starttls: false sends the user list (and the bind password) unencrypted; "
                "use ldaps:// or StartTLS, or set allow_insecure_plaintext: true"
            )
        secrets = [self.bind_password_file, self.bind_password_env, self.bind_password_credential]
        given = sum(s is not None for s in secrets)
        if self.bind_dn is None and given:
            raise ValueError(
                "bind_password_* needs bind_dn (without bind_dn the bind is anonymous)"
            )
        if self.bind_dn is not None and given != 1:
            raise ValueError(
                "with bind_dn, set exactly one of bind_password_file, bind_password_env, "
                "bind_password_credential"
            )
        if self.bind_dn is not None and not self.bind_dn.strip():
            raise ValueError("bind_dn is empty (leave it out for an anonymous bind)")
        return self

    def uses_starttls(self, url: str) -> bool:
        """Whether ``url`` is upgraded with StartTLS (every ldap:// unless starttls: false)."""
        return urlsplit(url).scheme == "ldap" and self.starttls is not False

    @property
    def label(self) -> str:
        """What logs call this directory: the first server's host:port (and how many more)."""
        parts = urlsplit(self.url[0])
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        return host + (f" (+{len(self.url) - 1})" if len(self.url) > 1 else "")
