"""Settings for large installations: how quotawatch reaches Dovecot's doveadm for user lists and quotas."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from quotawatch.config.base import Strict


class DoveadmAccess(Strict):
    """Dovecot's doveadm: its HTTP API (``url`` + API key) or, on the mail host, the command."""

    url: str | None = Field(
        None,
        description="doveadm HTTP API endpoint; https:// (verified like every TLS connection), "
        "http:// only with allow_insecure_plaintext.",
        examples=["https://mail.example.org:8080/doveadm/v1"],
    )
    command: tuple[str, ...] | None = Field(
        None,
        description="Run doveadm locally instead (on the mail host): the program and its first "
        "arguments.",
        examples=[["doveadm"], ["doveadm", "-c", "/etc/dovecot/dovecot.conf"]],
    )
    api_key_file: Path | None = Field(
        None,
        description="File holding doveadm_api_key (mode 0600 or stricter; one line).",
        examples=["/etc/quotawatch/secrets/doveadm"],
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key.", examples=["QW_DOVEADM_KEY"]
    )
    api_key_credential: str | None = Field(
        None,
        description="systemd credential holding the API key ($CREDENTIALS_DIRECTORY/NAME).",
        examples=["doveadm"],
    )
    ca_file: Path | None = Field(
        None,
        description="PEM file of CAs to trust for the API instead of the system store.",
        examples=["/etc/quotawatch/ca.pem"],
    )
    allow_insecure_plaintext: bool = Field(
        False,
        description="Permit an http:// url (the API key is sent unencrypted).",
        examples=[False],
    )
    user_mask: str = Field(
        "*", description="Which users to list (doveadm's userMask).", examples=["*@example.org"]
    )
    timeout: float = Field(
        120.0,
        gt=0,
        description=(
            "Seconds to wait for doveadm's answer; the quota of all users, one answer sent "
            "when the last user is done, may take 20 ms per account that reads it."
        ),
        examples=[120],
    )

    @model_validator(mode="after")
    def _check_access(self) -> DoveadmAccess:
        if (self.url is None) == (self.command is None):
            raise ValueError("set exactly one of url (the doveadm HTTP API) or command (local)")
        keys = [self.api_key_file, self.api_key_env, self.api_key_credential]
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError(f"url must be https://host:port/doveadm/v1, got {self.url!r}")
            if parts.username or parts.password:
                raise ValueError("url must not carry credentials; use api_key_file/env/credential")
            if parts.scheme == "http" and not self.allow_insecure_plaintext:
                raise ValueError(
                    "url is http://: the API key would travel unencrypted; use https:// "
                    "or set allow_insecure_plaintext: true"
                )
            if sum(k is not None for k in keys) != 1:
                raise ValueError(
                    "with url, set exactly one of api_key_file, api_key_env, api_key_credential"
                )
        else:
            if any(k is not None for k in keys) or self.ca_file is not None:
                raise ValueError("api_key_* and ca_file are for url, not for command")
            if not self.command:
                raise ValueError("command needs at least the program, e.g. [doveadm]")
        return self

    @property
    def label(self) -> str:
        """What logs and metrics call this doveadm: the URL's host:port, or ``local``."""
        if self.url is None:
            return "local"
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
