"""The ``oauth2:`` block of an account or of ``smtp:``: provider, client, flow, scopes and endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from quotawatch.config.base import Strict

#: https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
MICROSOFT_APP_SCOPES = ("https://outlook.office365.com/.default",)
MICROSOFT_DELEGATED_SCOPES = (
    "https://outlook.office365.com/IMAP.AccessAsUser.All",
    "https://outlook.office365.com/POP.AccessAsUser.All",
    "https://outlook.office365.com/SMTP.Send",
)
#: https://developers.google.com/gmail/imap/xoauth2-protocol
GOOGLE_SCOPES = ("https://mail.google.com/",)
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"


class OAuth2(Strict):
    """How to obtain an OAuth2 access token for a mailbox (``auth: oauth2``)."""

    provider: Literal["microsoft", "google", "generic"] = Field(
        description="microsoft (msal), google (google-auth) or generic (authlib, any token endpoint).",
        examples=["microsoft"],
    )
    flow: Literal["app-only", "delegated"] = Field(
        "app-only",
        description="app-only: one app credential for every mailbox (Microsoft client credentials, "
        "Google service account with domain-wide delegation, generic client credentials); "
        "delegated: a person's refresh token from `quotawatch auth login`.",
        examples=["app-only"],
    )
    client_id: str = Field(
        description="Application (client) id; for google: unused (the key file names its client).",
        examples=["4a1aa1d5-c567-49d0-ad0b-cd957a47f842"],
    )
    tenant: str | None = Field(
        None,
        description="microsoft: directory (tenant) id or domain; required for app-only, "
        "default organizations for delegated.",
        examples=["contoso.onmicrosoft.com"],
    )
    client_secret_file: Path | None = Field(
        None,
        description="File with the client secret (mode 0600); for google app-only the service "
        "account's JSON key.",
        examples=["/etc/quotawatch/secrets/app"],
    )
    client_secret_env: str | None = Field(
        None, description="Environment variable holding the client secret.", examples=["QW_APP"]
    )
    client_secret_credential: str | None = Field(
        None,
        description="systemd credential name holding the client secret.",
        examples=["app"],
    )
    client_certificate_file: Path | None = Field(
        None,
        description="microsoft app-only: PEM file with the private key and the certificate "
        "uploaded to the app registration (mode 0600), instead of a client secret.",
        examples=["/etc/quotawatch/secrets/app.pem"],
    )
    scopes: list[str] | None = Field(
        None,
        description="Requested scopes; default by provider and flow (microsoft app-only "
        "https://outlook.office365.com/.default, google https://mail.google.com/).",
        examples=[["https://outlook.office365.com/.default"]],
    )
    mechanism: Literal["xoauth2", "oauthbearer"] = Field(
        "xoauth2",
        description="SASL mechanism: xoauth2 (Microsoft, Google) or oauthbearer (RFC 7628).",
        examples=["xoauth2"],
    )
    authority: str | None = Field(
        None,
        description="microsoft: authority URL instead of https://login.microsoftonline.com/TENANT "
        "(national clouds, tests).",
        examples=["https://login.microsoftonline.us/contoso.onmicrosoft.com"],
    )
    token_endpoint: str | None = Field(
        None,
        description="generic: the token endpoint (required); google: instead of the key file's "
        "token_uri.",
        examples=["https://idp.example.org/oauth2/token"],
    )
    device_authorization_endpoint: str | None = Field(
        None,
        description="generic delegated: the device authorization endpoint for `auth login`.",
        examples=["https://idp.example.org/oauth2/device"],
    )
    graph_url: str = Field(
        "https://graph.microsoft.com",
        description="microsoft: Microsoft Graph, for quota_from_graph (national clouds, tests).",
        examples=["https://graph.microsoft.com"],
    )
    timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for the token endpoint.", examples=[30]
    )

    @model_validator(mode="after")
    def _check(self) -> OAuth2:
        secrets = [
            self.client_secret_file,
            self.client_secret_env,
            self.client_secret_credential,
            self.client_certificate_file,
        ]
        given = sum(s is not None for s in secrets)
        if given > 1:
            raise ValueError(
                "set at most one of client_secret_file, client_secret_env, "
                "client_secret_credential, client_certificate_file"
            )
        if self.flow == "app-only" and given == 0:
            raise ValueError(
                "flow app-only needs a client secret: client_secret_file, client_secret_env, "
                "client_secret_credential or client_certificate_file"
            )
        if self.client_certificate_file is not None and self.provider != "microsoft":
            raise ValueError("client_certificate_file is for provider microsoft only")
        if (
            self.provider == "microsoft"
            and self.flow == "app-only"
            and not (self.tenant or self.authority)
        ):
            raise ValueError("provider microsoft with flow app-only needs tenant (or authority)")
        if self.provider == "generic" and not self.token_endpoint:
            raise ValueError("provider generic needs token_endpoint")
        if self.provider == "google" and self.flow == "delegated":
            raise ValueError(
                "provider google supports flow app-only (service account with domain-wide "
                "delegation); for a person's mailbox use provider generic with a refresh token"
            )
        if self.authority is not None and self.provider != "microsoft":
            raise ValueError("authority is for provider microsoft only")
        for name in ("authority", "token_endpoint", "device_authorization_endpoint", "graph_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith("https://"):
                raise ValueError(f"{name} must be an https:// URL")
        if self.scopes is not None and not self.scopes:
            raise ValueError("scopes must not be empty; omit it for the provider's default")
        return self

    @property
    def effective_scopes(self) -> tuple[str, ...]:
        if self.scopes is not None:
            return tuple(self.scopes)
        if self.provider == "microsoft":
            return MICROSOFT_APP_SCOPES if self.flow == "app-only" else MICROSOFT_DELEGATED_SCOPES
        if self.provider == "google":
            return GOOGLE_SCOPES
        return ()

    @property
    def effective_authority(self) -> str:
        """microsoft: the authority URL msal talks to."""
        if self.authority:
            return self.authority.rstrip("/")
        return f"{MICROSOFT_AUTHORITY}/{self.tenant or 'organizations'}"

    @property
    def has_secret(self) -> bool:
        return any(
            s is not None
            for s in (
                self.client_secret_file,
                self.client_secret_env,
                self.client_secret_credential,
            )
        )
