"""Building blocks of the config models: strict base model, TLS modes and ports, address checks."""

from __future__ import annotations

from email.errors import HeaderParseError
from email.headerregistry import Address
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)


def _check_email(value: str | None) -> str | None:
    if value is None:
        return None
    if any(c in value for c in "\r\n\0"):
        raise ValueError("an email address cannot contain line breaks")
    try:
        addr = Address(addr_spec=value)
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise ValueError(f"not a valid email address: {value!r}") from exc
    if not addr.domain or not addr.username:
        raise ValueError(f"not a valid email address: {value!r}")
    return value


def _check_from(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError("a From address cannot contain line breaks")
    from email.headerregistry import HeaderRegistry

    try:
        header = HeaderRegistry()("From", value)
        addresses = header.addresses  # type: ignore[attr-defined]
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise ValueError(f"not a valid From address: {value!r}") from exc
    if len(addresses) != 1 or not addresses[0].domain:
        raise ValueError(f"not a valid From address: {value!r}")
    return value


Email = Annotated[str, AfterValidator(_check_email)]


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsMode(StrEnum):
    implicit = "implicit"
    starttls = "starttls"
    none = "none"


DEFAULT_PORTS = {
    ("imap", TlsMode.implicit): 993,
    ("imap", TlsMode.starttls): 143,
    ("imap", TlsMode.none): 143,
    ("pop3", TlsMode.implicit): 995,
    ("pop3", TlsMode.starttls): 110,
    ("pop3", TlsMode.none): 110,
}
_IMPLICIT_PORTS = {993, 995, 465}
_PLAIN_PORTS = {143, 110, 25, 587}


def check_tls_mode(tls: TlsMode, port: int | None, allow_plaintext: bool) -> None:
    """Refuse plaintext without the opt-in and a TLS mode that contradicts a well-known port."""
    if tls is TlsMode.none and not allow_plaintext:
        raise ValueError(
            "tls: none sends the password unencrypted; set allow_insecure_plaintext: true "
            "to permit it"
        )
    if port is not None:
        if tls is TlsMode.starttls and port in _IMPLICIT_PORTS:
            raise ValueError(
                f"tls: starttls on port {port}, which is an implicit-TLS port; "
                "use tls: implicit, or a STARTTLS port such as 143, 110 or 587"
            )
        if tls in (TlsMode.implicit,) and port in _PLAIN_PORTS:
            raise ValueError(
                f"tls: implicit on port {port}, which is a STARTTLS/plaintext port; "
                "use tls: starttls, or an implicit-TLS port such as 993, 995 or 465"
            )
