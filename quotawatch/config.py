"""The YAML config: pydantic models (which double as the reference) and a loader that reports every problem at once."""

from __future__ import annotations

import re
from datetime import timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from quotawatch.errors import ConfigError
from quotawatch.units import ByteSize, Duration, Percent

SPECIAL_USE_FLAGS = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")


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


class AccountFields(Strict):
    """Settings shared by accounts and account templates."""

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
    password_file: Path | None = Field(
        None,
        description="File holding the password (mode 0600 or stricter; one line).",
        examples=["/etc/quotawatch/secrets/alice"],
    )
    password_env: str | None = Field(
        None,
        description="Environment variable holding the password.",
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
        description="POP3: the mailbox quota (POP3 cannot ask the server).",
        examples=["500MB"],
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

    _check_email = field_validator("email", "warning_email")(lambda cls, v: _check_email(v))

    @field_validator("tls")
    @classmethod
    def _check_tls(cls, tls: TlsMode, info: ValidationInfo) -> TlsMode:
        check_tls_mode(tls, info.data.get("port"), bool(info.data.get("allow_insecure_plaintext")))
        return tls

    @model_validator(mode="after")
    def _check_transport(self) -> AccountFields:
        sources = [self.password_file, self.password_env, self.password_credential]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("set exactly one of password_file, password_env, password_credential")
        if self.protocol == "imap":
            for name in ("quota", "client_state_file", "imap_port"):
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


_NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-][A-Za-z0-9_.@+ -]*$")


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value) or len(value) > 200:
        raise ValueError(
            f"account name {value!r} may contain only letters, digits, space and _ . @ + -"
        )
    return value


class Account(AccountFields):
    """One mailbox to watch."""

    name: Annotated[str, AfterValidator(_check_name)] = Field(
        description="Unique name, used in logs and metric labels.", examples=["alice"]
    )


class AccountTemplate(AccountFields):
    """An account with ``{user}`` placeholders, expanded for each listed username."""

    name: str = Field("{user}", description="Account name pattern.", examples=["{user}"])


class AccountSource(Strict):
    """Many mailboxes from a list of usernames and one template (one admin credential)."""

    usernames_file: Path = Field(
        description='One username per line; "#" starts a comment.',
        examples=["/etc/quotawatch/users.txt"],
    )
    template: AccountTemplate


class Rule(Strict):
    """A retention rule: which messages in which folders may go, and how."""

    folders: list[str] = Field(
        min_length=1,
        description="Folder names, shell-style globs, or special-use flags (\\Trash, \\Junk, ...), "
        "in order of sacrifice.",
        examples=[["\\Trash"], ["\\Junk", "\\Trash", "INBOX"]],
    )
    older_than: Duration | None = Field(
        None, description="Only messages older than this (at least 1d).", examples=["30d"]
    )
    age: Literal["saved", "received", "sent"] = Field(
        "saved",
        description="saved = time in this folder; received = INTERNALDATE; sent = Date header.",
        examples=["saved"],
    )
    larger_than: ByteSize | None = Field(
        None, description="Only messages larger than this.", examples=["5MB"]
    )
    when_above: Percent | None = Field(
        None,
        description="Quota-driven: act only when the fullest quota resource is above this.",
        examples=["90%"],
    )
    down_to: Percent | None = Field(
        None,
        description="With when_above: free until projected usage is below this.",
        examples=["80%"],
    )
    order: Literal["oldest", "largest"] = Field(
        "oldest", description="With when_above: which messages go first.", examples=["oldest"]
    )
    action: str = Field(
        "delete", description="delete | move:<folder> | archive", examples=["delete"]
    )
    archive_dir: str | None = Field(
        None,
        description="With action archive: local Maildir root; {account} is replaced.",
        examples=["/srv/mail-archive/{account}"],
    )
    keep_flagged: bool = Field(True, description="Never touch flagged messages.", examples=[True])
    keep_unseen: bool | None = Field(
        None,
        description="Never touch unseen messages (default: true for INBOX, false elsewhere).",
        examples=[True],
    )
    keep_newer_than: Duration = Field(
        timedelta(days=1), description="Never touch messages younger than this.", examples=["1d"]
    )
    allow_inbox: bool = Field(
        False, description="Required for a rule that touches INBOX.", examples=[False]
    )
    max_delete_fraction: Percent | None = Field(
        None,
        description="Override the account's max_delete_fraction for the folders this rule acts on "
        "(e.g. 100% for a Trash rule, where removing everything old is expected).",
        examples=["100%"],
    )

    @field_validator("action")
    @classmethod
    def _check_action(cls, v: str) -> str:
        if v in ("delete", "archive"):
            return v
        if v.startswith("move:") and v[5:].strip():
            return v
        raise ValueError("action must be delete, archive, or move:<folder>")

    @model_validator(mode="after")
    def _check_rule(self) -> Rule:
        if self.older_than is not None and self.older_than < timedelta(days=1):
            raise ValueError("older_than must be at least 1d")
        if (self.when_above is None) != (self.down_to is None):
            raise ValueError("when_above and down_to go together")
        if (
            self.when_above is not None
            and self.down_to is not None
            and self.down_to >= self.when_above
        ):
            raise ValueError(
                f"down_to ({self.down_to:.0%}) must be below when_above ({self.when_above:.0%})"
            )
        if self.older_than is None and self.when_above is None and self.larger_than is None:
            raise ValueError(
                "a rule needs older_than, larger_than or when_above/down_to; "
                "otherwise it would select every message"
            )
        if self.action == "archive" and not self.archive_dir:
            raise ValueError("action archive needs archive_dir")
        if self.action != "archive" and self.archive_dir:
            raise ValueError("archive_dir is only used with action archive")
        if any(f.upper() == "INBOX" for f in self.folders) and not self.allow_inbox:
            raise ValueError("this rule touches INBOX; set allow_inbox: true to permit it")
        for f in self.folders:
            if f.startswith("\\") and f.lower() not in {x.lower() for x in SPECIAL_USE_FLAGS}:
                raise ValueError(
                    f"unknown special-use flag {f!r}; known: {', '.join(SPECIAL_USE_FLAGS)}"
                )
        return self

    @property
    def move_target(self) -> str | None:
        return self.action[5:].strip() if self.action.startswith("move:") else None


class Schedule(Strict):
    """When the daemon checks and cleans."""

    interval: Duration = Field(
        timedelta(minutes=15), description="Per-account check interval.", examples=["15m"]
    )
    jitter: Duration = Field(
        timedelta(seconds=60),
        description="Random delay added to spread accounts.",
        examples=["60s"],
    )
    concurrency: int = Field(
        16, ge=1, le=1024, description="Accounts checked at the same time.", examples=[16]
    )
    cleanup: bool = Field(
        True, description="Apply rules on schedule; false = monitor only.", examples=[True]
    )


class Metrics(Strict):
    """The Prometheus endpoint."""

    listen: str = Field(
        "127.0.0.1:9947",
        description="host:port of the /metrics and /healthz endpoint.",
        examples=["127.0.0.1:9947"],
    )
    tls_cert_file: Path | None = Field(None, description="Serve HTTPS with this certificate.")
    tls_key_file: Path | None = Field(None, description="Key for tls_cert_file.")
    basic_auth_username: str | None = Field(None, description="Require HTTP basic auth.")
    basic_auth_password_file: Path | None = Field(
        None, description="File with the basic auth password."
    )
    allow_unauthenticated_public: bool = Field(
        False, description="Permit a non-loopback listen address without TLS or auth."
    )
    top_folders: int = Field(
        10,
        ge=0,
        le=1000,
        description="Export sizes of the N largest folders per account.",
        examples=[10],
    )

    @model_validator(mode="after")
    def _check_listen(self) -> Metrics:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"listen must be host:port, got {self.listen!r}")
        host = host.strip("[]")
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        protected = (self.tls_cert_file and self.tls_key_file) or (
            self.basic_auth_username and self.basic_auth_password_file
        )
        if not loopback and not protected and not self.allow_unauthenticated_public:
            raise ValueError(
                f"listen {self.listen} is reachable from other hosts; set tls_cert_file/tls_key_file "
                "or basic auth, or allow_unauthenticated_public: true"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class Smtp(Strict):
    """Where warning mails are submitted."""

    host: str = Field(description="SMTP server.", examples=["smtp.example.org"])
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Default 465 implicit, 587 starttls, 25 none.",
        examples=[587],
    )
    allow_insecure_plaintext: bool = Field(False, description="Permit tls: none.")
    tls: TlsMode = Field(
        TlsMode.starttls,
        validate_default=True,
        description="implicit | starttls | none",
        examples=["starttls"],
    )
    ca_file: Path | None = Field(None, description="PEM CAs to trust instead of the system store.")

    @field_validator("tls")
    @classmethod
    def _check_tls(cls, tls: TlsMode, info: ValidationInfo) -> TlsMode:
        check_tls_mode(tls, info.data.get("port"), bool(info.data.get("allow_insecure_plaintext")))
        return tls

    username: str | None = Field(
        None, description="AUTH user; omit for no authentication.", examples=["quotawatch"]
    )
    password_file: Path | None = Field(
        None,
        description="File holding the SMTP password (mode 0600).",
        examples=["/etc/quotawatch/smtp"],
    )
    password_env: str | None = Field(
        None, description="Environment variable holding the SMTP password.", examples=["QW_SMTP"]
    )
    password_credential: str | None = Field(
        None, description="systemd credential holding the SMTP password.", examples=["smtp"]
    )
    from_: str = Field(
        alias="from", description="From header.", examples=["Mail service <postmaster@example.org>"]
    )
    timeout: float = Field(30.0, gt=0, description="Seconds per SMTP operation.")

    _check_from = field_validator("from_")(lambda cls, v: _check_from(v))

    @model_validator(mode="after")
    def _check_smtp(self) -> Smtp:
        count = sum(
            s is not None for s in (self.password_file, self.password_env, self.password_credential)
        )
        if self.username and count != 1:
            raise ValueError(
                "with username, set exactly one of password_file, password_env, password_credential"
            )
        if not self.username and count:
            raise ValueError("a password is set but no username")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {TlsMode.implicit: 465, TlsMode.starttls: 587, TlsMode.none: 25}[self.tls]


_LABEL_UNITS: tuple[tuple[str, int], ...] = (
    ("TiB", 1024**4), ("TB", 1000**4), ("GiB", 1024**3), ("GB", 1000**3),
    ("MiB", 1024**2), ("MB", 1000**2), ("KiB", 1024), ("KB", 1000),
)  # fmt: skip


class Threshold(BaseModel):
    """A warning level: a fraction used, or an absolute amount free (exactly one of the two)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ratio: float | None = Field(None, gt=0, le=1, description="Fraction of the quota used.")
    free_bytes: int | None = Field(None, gt=0, description="Warn when this little is free.")

    @model_validator(mode="after")
    def _one_kind(self) -> Threshold:
        if (self.ratio is None) == (self.free_bytes is None):
            raise ValueError(
                'a threshold is either a percentage ("80%") or free space ("50MB free")'
            )
        return self

    @property
    def label(self) -> str:
        """``80%`` or ``50MB free``: the metric label and the key in the warning state."""
        if self.ratio is not None:
            return f"{self.ratio * 100:g}%"
        free = self.free_bytes or 0
        unit = next(((n, s) for n, s in _LABEL_UNITS if free % s == 0), ("B", 1))
        return f"{free // unit[1]}{unit[0]} free"


def _parse_threshold(value: Any) -> Any:
    if isinstance(value, Threshold | dict):
        return value
    try:
        if isinstance(value, str) and value.strip().lower().endswith("free"):
            from quotawatch.units import parse_size

            return Threshold(free_bytes=parse_size(value.strip()[:-4].strip()))
        from quotawatch.units import parse_percent

        return Threshold(ratio=parse_percent(value))
    except ValueError:
        raise ValueError(
            f'threshold {value!r}: use a percentage such as "80%" or free space such as "50MB free"'
        ) from None


class AdminDigest(Strict):
    to: Email = Field(
        description="Admin address for the digest.", examples=["postmaster@example.org"]
    )
    every: Duration = Field(timedelta(days=1), description="How often.", examples=["1d"])


class Warnings(Strict):
    """Quota warning mails to users."""

    thresholds: list[Annotated[Threshold, Field()]] = Field(
        default_factory=lambda: [Threshold(ratio=0.8), Threshold(ratio=0.9), Threshold(ratio=0.95)],
        description='Usage levels that trigger a mail: "80%" or absolute "50MB free".',
        examples=[["80%", "90%", "95%"]],
    )
    rearm_below: Percent = Field(
        0.75,
        description="A threshold fires again only after usage fell below this.",
        examples=["75%"],
    )
    remind_every: Duration | None = Field(
        timedelta(days=7), description="Reminder while still above.", examples=["7d"]
    )
    all_clear: bool = Field(True, description="Send one mail when usage falls below rearm_below.")
    language: Literal["en", "de"] = Field("en", description="Default language.", examples=["de"])
    cc_admin: Email | None = Field(None, description="Admin address in Cc.")
    admin_digest: AdminDigest | None = None

    @field_validator("thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError("thresholds must be a list such as [80%, 90%, 95%]")
        return [_parse_threshold(x) for x in v]

    @model_validator(mode="after")
    def _check_warnings(self) -> Warnings:
        labels = [t.label for t in self.thresholds]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"threshold {', '.join(twice)} listed twice")
        for t in self.thresholds:
            if t.ratio is not None and t.ratio <= self.rearm_below:
                raise ValueError(
                    f"threshold {t.label} must be above rearm_below ({self.rearm_below:.0%})"
                )
        return self


class Config(Strict):
    """The whole quotawatch config file."""

    state_dir: Path = Field(
        Path("./state"),
        description="SQLite state and the audit log live here.",
        examples=["/var/lib/quotawatch"],
    )
    accounts: list[Account] = Field(default_factory=list, description="Mailboxes to watch.")
    account_sources: list[AccountSource] = Field(
        default_factory=list, description="Many mailboxes from a username list."
    )
    rules: dict[str, Rule] = Field(default_factory=dict, description="Retention rules by name.")
    schedule: Schedule = Schedule()
    metrics: Metrics = Metrics()
    smtp: Smtp | None = None
    warnings: Warnings | None = None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-plain") or "[" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _cross_checks(data: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, acct in enumerate(data.accounts):
        if acct.name in seen:
            problems.append(
                (
                    f"accounts[{i}].name",
                    f"duplicate account name {acct.name!r} (also accounts[{seen[acct.name]}])",
                )
            )
        seen.setdefault(acct.name, i)
    owners: list[tuple[str, AccountFields]] = [
        (f"accounts[{i}]", a) for i, a in enumerate(data.accounts)
    ]
    owners += [
        (f"account_sources[{i}].template", s.template) for i, s in enumerate(data.account_sources)
    ]
    for where, owner in owners:
        for j, rule_name in enumerate(owner.rules):
            rule = data.rules.get(rule_name)
            if rule is None:
                known = ", ".join(sorted(data.rules)) or "none defined"
                problems.append(
                    (f"{where}.rules[{j}]", f"unknown rule {rule_name!r} (known: {known})")
                )
                continue
            if owner.protocol == "pop3":
                problems += [
                    (f"rules.{rule_name}.{field}", f"{msg} (rule used by POP3 account at {where})")
                    for field, msg in pop3_rule_problems(rule)
                ]
        if owner.protocol == "pop3" and owner.quota is None and not owner.quota_from_imap:
            problems.append(
                (f"{where}.quota", "a POP3 account needs quota: SIZE or quota_from_imap: true")
            )
    if data.warnings is not None and data.smtp is None:
        problems.append(("smtp", "warnings are configured but smtp is not"))
    return problems


def pop3_rule_problems(rule: Rule) -> list[tuple[str, str]]:
    """What a rule asks that POP3 cannot do, as (field, message) pairs."""
    problems = []
    for k, folder in enumerate(rule.folders):
        if folder.upper() != "INBOX":
            problems.append((f"folders[{k}]", f"POP3 has only INBOX, not {folder!r}"))
    if rule.age == "received":
        problems.append(("age", "age: received has no meaning for POP3; use saved or sent"))
    if "keep_flagged" in rule.model_fields_set and rule.keep_flagged:
        problems.append(("keep_flagged", "POP3 has no flags; remove keep_flagged"))
    if "keep_unseen" in rule.model_fields_set and rule.keep_unseen:
        problems.append(("keep_unseen", "POP3 has no seen flag; remove keep_unseen"))
    if rule.move_target is not None:
        problems.append(("action", "POP3 has no folders to move to; use delete or archive"))
    return problems


def parse_config(data: Any, path: str = "<config>") -> Config:
    """Validate already-parsed YAML data; raise ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [("", "the top level must be a mapping")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            msg = err["msg"].removeprefix("Value error, ")
            problems.append((_loc(err["loc"]), msg))
        raise ConfigError(path, problems) from None
    problems = _cross_checks(config)
    if problems:
        raise ConfigError(path, problems)
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; relative paths in it are taken from the file's folder."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, [("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(name, [("", f"{where}invalid YAML: {problem}")]) from None
    config = parse_config(data, name)
    base = Path(path).resolve().parent
    if not config.state_dir.is_absolute():
        config = config.model_copy(update={"state_dir": base / config.state_dir})
    return config
