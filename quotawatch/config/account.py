"""Account settings: one mailbox, a template for many, and where their usernames come from."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from quotawatch.config.base import DEFAULT_PORTS, Strict, TlsMode, _check_email, check_tls_mode
from quotawatch.config.fleet import DoveadmAccess
from quotawatch.config.ldap import LdapSource
from quotawatch.config.oauth2 import OAuth2
from quotawatch.config.profiles import EXCHANGE, Profile, fill_defaults
from quotawatch.units import ByteSize, Duration, Percent


class AccountFields(Strict):
    """Settings shared by accounts and account templates."""

    provider: Profile | None = Field(
        None,
        description="Provider profile: fills in host and switches on the provider's quirks "
        "(microsoft365/outlook: Exchange Online's folder names and a configured quota; gmail).",
        examples=["microsoft365"],
    )
    protocol: Literal["imap", "pop3"] = Field(
        "imap", description="Mail access protocol.", examples=["imap", "pop3"]
    )
    host: str = Field(
        description="Server host name (also the name checked in its certificate).",
        examples=["mail.example.org"],
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="TCP port; default from protocol and tls (993/143 IMAP, 995/110 POP3).",
        examples=[993],
    )
    allow_insecure_plaintext: bool = Field(
        False, description="Permit tls: none, sending the password unencrypted.", examples=[False]
    )
    tls: TlsMode = Field(
        TlsMode.implicit,
        validate_default=True,
        description="implicit = TLS from the first byte; starttls = upgrade, refused if the server "
        "does not offer it; none = plaintext, needs allow_insecure_plaintext.",
        examples=["implicit"],
    )
    ca_file: Path | None = Field(
        None,
        description="PEM file of CAs to trust instead of the system store. Verification is always on.",
        examples=["/etc/quotawatch/ca.pem"],
    )
    username: str = Field(
        description='Login name. For a Dovecot master user: "alice*admin".', examples=["alice"]
    )
    authorize_as: str | None = Field(
        None,
        description="SASL PLAIN authorization identity: log in with username/password "
        "(an admin) and act as this user (Dovecot, Cyrus).",
        examples=["alice"],
    )
    auth: Literal["password", "oauth2"] = Field(
        "password",
        description="password: the password_* keys; oauth2: an access token as the oauth2: "
        "block says (SASL XOAUTH2 or OAUTHBEARER).",
        examples=["oauth2"],
    )
    oauth2: OAuth2 | None = Field(
        None, description="With auth: oauth2: provider, client, flow and scopes."
    )
    password_file: Path | None = Field(
        None,
        description="File holding the password (mode 0600 or stricter; one line).",
        examples=["/etc/quotawatch/secrets/alice"],
    )
    password_env: str | None = Field(
        None,
        description="Environment variable holding the password."
        " The weakest choice: the value is readable in /proc/PID/environ and inherited by"
        " child processes; prefer password_credential or password_file.",
        examples=["QW_ALICE_PASSWORD"],
    )
    password_credential: str | None = Field(
        None,
        description="systemd credential name, read from $CREDENTIALS_DIRECTORY/NAME (LoadCredential=).",
        examples=["alice"],
    )
    email: str | None = Field(
        None, description="The user's address, where warnings go.", examples=["alice@example.org"]
    )
    warning_email: str | None = Field(
        None,
        description="Additional address for warnings (a mailbox that is not the full one).",
        examples=["alice.private@example.net"],
    )
    language: Literal["en", "de"] | None = Field(
        None,
        description="Language of warning mails; default from warnings.language.",
        examples=["de"],
    )
    connect_timeout: float = Field(
        15.0, gt=0, description="Seconds to wait for the TCP and TLS handshake.", examples=[15]
    )
    timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for any server response.", examples=[60]
    )
    command_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds one command may take from sending it to its complete answer, "
        "however slowly the server trickles it.",
        examples=[300],
    )
    job_timeout: float = Field(
        1800.0,
        gt=0,
        description="Seconds one account's whole job (connect, check, plan, cleanup) may take.",
        examples=[1800],
    )
    rules: list[str] = Field(
        default_factory=list,
        description="Names of retention rules applied to this account.",
        examples=[["trash-30d", "junk-14d"]],
    )
    max_delete_fraction: Percent = Field(
        0.5,
        description="Safety cap: stop if a run would remove more than this share of any folder.",
        examples=["50%"],
    )
    max_delete_messages: int = Field(
        5000,
        ge=0,
        description="Safety cap: stop if a run would remove more messages than this.",
        examples=[5000],
    )
    # POP3 only
    quota: ByteSize | None = Field(
        None,
        description="POP3, or IMAP with provider microsoft365/outlook: the mailbox quota "
        "(neither can ask the server).",
        examples=["500MB"],
    )
    quota_from_graph: bool = Field(
        False,
        description="provider microsoft365 with auth: oauth2 app-only: read each mailbox's quota "
        "and usage from Microsoft Graph's mailbox usage report (the app needs Reports.Read.All).",
        examples=[False],
    )
    quota_from_imap: bool = Field(
        False,
        description="POP3: read the quota over IMAP with the same credentials.",
        examples=[False],
    )
    imap_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="POP3 with quota_from_imap: the IMAP port, same host and tls mode "
        "(default 993 for tls: implicit, 143 otherwise).",
        examples=[993],
    )
    min_on_server: Duration = Field(
        timedelta(days=7),
        description="POP3: delete a message only after it has been on the server this long "
        "(by quotawatch's first-seen record), so the user's client has fetched it.",
        examples=["7d"],
    )
    client_state_file: Path | None = Field(
        None,
        description="POP3: copy of the client's list of downloaded UIDLs (Thunderbird popstate.dat, "
        "getmail oldmail-*, fetchmail .fetchids); only UIDLs listed there may be deleted.",
        examples=["/var/lib/quotawatch/bob.fetchids"],
    )

    # large installations: quota from doveadm, IMAP only when needed
    quota_source: Literal["imap", "doveadm"] = Field(
        "imap",
        description="Where the quota comes from: imap (GETQUOTAROOT at each check) or doveadm "
        "(one quotaGet of every user per cycle and Dovecot; IMAP only for folders and cleanups).",
        examples=["doveadm"],
    )
    doveadm: DoveadmAccess | None = Field(
        None,
        description="With quota_source: doveadm, how to reach doveadm (in a doveadm source: "
        "the source's own doveadm by default).",
    )
    imap_when_above: Percent = Field(
        0.7,
        description="With quota_source: doveadm: log in over IMAP (folders, plan, cleanup) when "
        "usage is at least this high ...",
        examples=["70%"],
    )
    folders_every: Duration = Field(
        timedelta(days=1),
        description="... or when the last IMAP check is this old.",
        examples=["1d"],
    )

    _check_email = field_validator("email", "warning_email")(lambda cls, v: _check_email(v))

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, data: Any) -> Any:
        return fill_defaults(data)

    @field_validator("tls")
    @classmethod
    def _check_tls(cls, tls: TlsMode, info: ValidationInfo) -> TlsMode:
        check_tls_mode(tls, info.data.get("port"), bool(info.data.get("allow_insecure_plaintext")))
        return tls

    @model_validator(mode="after")
    def _check_transport(self) -> AccountFields:
        sources = [self.password_file, self.password_env, self.password_credential]
        if self.auth == "oauth2":
            if self.oauth2 is None:
                raise ValueError("auth: oauth2 needs an oauth2: block")
            if any(s is not None for s in sources):
                raise ValueError(
                    "auth: oauth2 takes no password_file, password_env, password_credential"
                )
            if self.authorize_as:
                raise ValueError("authorize_as is for auth: password only")
        elif self.oauth2 is not None:
            raise ValueError("an oauth2: block needs auth: oauth2")
        elif sum(s is not None for s in sources) != 1:
            raise ValueError("set exactly one of password_file, password_env, password_credential")
        if self.quota_from_graph:
            settings = self.oauth2
            if settings is None or settings.provider != "microsoft" or settings.flow != "app-only":
                raise ValueError(
                    "quota_from_graph needs auth: oauth2 with provider microsoft, flow app-only"
                )
            if self.quota is not None or self.quota_from_imap:
                raise ValueError("set one of quota, quota_from_imap, quota_from_graph")
        if self.quota_source == "doveadm" and self.protocol != "imap":
            raise ValueError("quota_source: doveadm is for IMAP accounts (of a Dovecot server)")
        if self.protocol == "imap":
            exchange = self.provider in EXCHANGE
            for name in ("client_state_file", "imap_port", *(() if exchange else ("quota",))):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is for POP3 accounts only")
            if self.quota_from_imap:
                raise ValueError("quota_from_imap is for POP3 accounts only")
            if "min_on_server" in self.model_fields_set:
                raise ValueError("min_on_server is for POP3 accounts only")
        else:
            if self.quota is not None and self.quota_from_imap:
                raise ValueError("set either quota or quota_from_imap: true, not both")
            if self.imap_port is not None and not self.quota_from_imap:
                raise ValueError("imap_port is only used with quota_from_imap: true")
            if self.imap_port is not None and self.tls is not TlsMode.none:
                try:
                    check_tls_mode(self.tls, self.imap_port, self.allow_insecure_plaintext)
                except ValueError as exc:
                    raise ValueError(f"imap_port: {exc}") from None
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[(self.protocol, self.tls)]


_NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-][A-Za-z0-9_.@+ -]*$")


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value) or len(value) > 200:
        raise ValueError(
            f"account name {value!r} may contain only letters, digits, space and _ . @ + -"
        )
    return value


class Account(AccountFields):
    """One mailbox to watch."""

    @model_validator(mode="after")
    def _check_doveadm(self) -> Account:
        if self.quota_source == "doveadm" and self.doveadm is None:
            raise ValueError("quota_source: doveadm needs doveadm: (url and api key, or command)")
        return self

    name: Annotated[str, AfterValidator(_check_name)] = Field(
        description="Unique name, used in logs and metric labels.", examples=["alice"]
    )


def _check_template_email(value: str | None) -> str | None:
    """An address, or one with the ``{email}`` placeholder (checked once it is filled in)."""
    return value if value is not None and "{email}" in value else _check_email(value)


class AccountTemplate(AccountFields):
    """An account with ``{user}`` (and, from LDAP, ``{email}``) placeholders, expanded per user."""

    name: str = Field("{user}", description="Account name pattern.", examples=["{user}"])

    _check_email = field_validator("email", "warning_email")(
        lambda cls, v: _check_template_email(v)
    )

    def uses(self, placeholder: str) -> bool:
        """Whether any key of the template holds ``placeholder`` (like ``{email}``)."""
        return placeholder in self.model_dump_json(exclude_unset=True)


#: the source label of the accounts listed under ``accounts:`` (the per-source metrics)
EXPLICIT_SOURCE = "accounts"


class AccountSource(Strict):
    """Many mailboxes from a list of usernames and one template (one admin credential)."""

    name: str | None = Field(
        None,
        description="Name of the source in logs and the source metrics (default: sources[N]; "
        "a source named 'accounts' shares its series with the accounts listed under accounts:).",
        examples=["staff"],
    )
    usernames_file: Path | None = Field(
        None,
        description='One username per line; "#" starts a comment.',
        examples=["/etc/quotawatch/users.txt"],
    )
    doveadm: DoveadmAccess | None = Field(
        None,
        description="The user list from Dovecot: doveadm user over the HTTP API or locally.",
    )
    ldap: LdapSource | None = Field(
        None,
        description="The user list from an LDAP directory: a paged search over TLS.",
    )
    refresh: Duration = Field(
        timedelta(hours=1),
        description="Re-read the user list this often (and on SIGHUP); a failed read keeps the "
        "last good list.",
        examples=["1h"],
    )
    template: AccountTemplate

    @model_validator(mode="after")
    def _one_kind(self) -> AccountSource:
        kinds = [self.usernames_file, self.doveadm, self.ldap]
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("set exactly one of usernames_file, doveadm or ldap")
        if self.template.uses("{email}") and (self.ldap is None or not self.ldap.email_attribute):
            raise ValueError(
                "the template uses {email}, which only an ldap source with email_attribute fills"
            )
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ValueError(
                f"source name {self.name!r} may contain only letters, digits, _ . @ + -"
            )
        if (
            self.template.quota_source == "doveadm"
            and self.template.doveadm is None
            and self.doveadm is None
        ):
            raise ValueError(
                "template.quota_source: doveadm needs doveadm: on the source or template"
            )
        return self

    def label(self, index: int) -> str:
        return self.name or f"sources[{index}]"

    @property
    def kind(self) -> str:
        """usernames_file, doveadm or ldap."""
        return "doveadm" if self.doveadm else "ldap" if self.ldap else "usernames_file"
