"""Daemon settings: schedule, metrics endpoint, SMTP and quota warnings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from quotawatch.config.base import Email, Strict, TlsMode, _check_from, check_tls_mode
from quotawatch.config.oauth2 import OAuth2
from quotawatch.units import Duration, Percent

#: The shortest check interval: one login per account per minute is already a lot for a server.
MIN_INTERVAL = timedelta(minutes=1)
MIN_INTERVAL_TEXT = "1m"


class Schedule(Strict):
    """When the daemon checks and cleans."""

    interval: Duration = Field(
        timedelta(minutes=15),
        description=f"Per-account check interval (at least {MIN_INTERVAL_TEXT}).",
        examples=["15m"],
    )
    jitter: Duration = Field(
        timedelta(seconds=60),
        description="Random delay added to spread accounts.",
        examples=["60s"],
    )
    concurrency: int = Field(
        16, ge=1, le=1024, description="Accounts checked at the same time.", examples=[16]
    )
    adaptive: bool | None = Field(
        None,
        description="Check each account as often as it needs: sooner near a warning level or "
        "when growing fast, up to max_interval when far from full; default on above 1,000 "
        "accounts.",
        examples=[True],
    )
    max_interval: Duration = Field(
        timedelta(hours=6),
        description="With adaptive: the longest wait between two checks of an account.",
        examples=["6h"],
    )
    cleanup: bool = Field(
        True, description="Apply rules on schedule; false = monitor only.", examples=[True]
    )
    lock_wait: Duration = Field(
        timedelta(seconds=5),
        description="How long a job waits for another worker (daemon or CLI) busy with the same "
        "mailbox before it skips the account.",
        examples=["5s"],
    )

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, v: timedelta) -> timedelta:
        if v < MIN_INTERVAL:
            raise ValueError(
                f"interval must be at least {MIN_INTERVAL_TEXT} (each interval logs in to every account)"
            )
        return v


#: the default of metrics.per_account: all accounts up to this many, "above 80%" beyond
PER_ACCOUNT_ALL_UP_TO = 1000
DEFAULT_ABOVE = 0.8


def _per_account(value: Any) -> Any:
    """``all`` | ``none`` | ``above 80%`` | ``{above: 80%}`` -> "all", "none" or the level."""
    from quotawatch.units import parse_percent

    if value is None or value in ("all", "none"):
        return value
    level = None
    if isinstance(value, dict) and set(value) == {"above"}:
        level = value["above"]
    elif isinstance(value, str) and value.strip().lower().startswith("above"):
        level = value.strip()[5:].lstrip(" :")
    if level is None:
        raise ValueError(f'per_account must be all, none or "above 80%", got {value!r}')
    return parse_percent(level)


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
    per_account: Annotated[float | Literal["all", "none"] | None, BeforeValidator(_per_account)] = (
        Field(
            None,
            description='Per-account series for: "all" accounts, those "above 80%" (and failing '
            'ones), or "none"; default all up to 1,000 accounts, "above 80%" beyond.',
            examples=["all", "above 80%", {"above": "80%"}, "none"],
        )
    )

    def per_account_level(self, accounts: int) -> float | None:
        """The usage level from which accounts get their own series: 0.0 = all, None = none."""
        mode = self.per_account
        if mode is None:
            mode = "all" if accounts <= PER_ACCOUNT_ALL_UP_TO else DEFAULT_ABOVE
        if mode == "all":
            return 0.0
        if mode == "none":
            return None
        return float(mode)

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
        None,
        description="Environment variable holding the SMTP password (the weakest choice, as for"
        " accounts: readable in /proc/PID/environ; prefer password_credential).",
        examples=["QW_SMTP"],
    )
    password_credential: str | None = Field(
        None, description="systemd credential holding the SMTP password.", examples=["smtp"]
    )
    auth: Literal["password", "oauth2"] = Field(
        "password",
        description="password, or oauth2 (AUTH XOAUTH2/OAUTHBEARER as the oauth2: block says).",
        examples=["password"],
    )
    oauth2: OAuth2 | None = Field(None, description="With auth: oauth2: how to get the token.")
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
        if self.auth == "oauth2":
            if self.oauth2 is None or not self.username:
                raise ValueError("auth: oauth2 needs username and an oauth2: block")
            if count:
                raise ValueError(
                    "auth: oauth2 takes no password_file, password_env, password_credential"
                )
            return self
        if self.oauth2 is not None:
            raise ValueError("an oauth2: block needs auth: oauth2")
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
