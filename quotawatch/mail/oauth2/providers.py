"""One token request per provider, with the vendor's own library: msal, google-auth, authlib.

Each function takes the ``oauth2:`` settings, the mailbox, the client secret (or key) and, for
the delegated flow, the stored refresh token; it returns a :class:`Grant` or raises
:class:`GrantRefused` (the provider said no: wrong secret, revoked refresh token) or
:class:`GrantUnreachable` (network, TLS, timeout). Messages carry the provider's error code and
description, never a token or secret. TLS is always verified (``REQUESTS_CA_BUNDLE`` is honoured).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from pydantic import SecretStr

from quotawatch.config.oauth2 import OAuth2
from quotawatch.extras import require

EXTRA = "oauth2"


@dataclass(frozen=True)
class Grant:
    """An access token with its lifetime in seconds and, delegated, the new refresh token."""

    access_token: SecretStr
    expires_in: float
    refresh_token: SecretStr | None = None


class GrantRefused(Exception):
    """The token endpoint answered with an OAuth2 error (``code`` like invalid_grant)."""

    def __init__(self, code: str, description: str) -> None:
        self.code = code
        self.description = " ".join(str(description).split())[:300]
        super().__init__(f"{code}: {self.description}" if self.description else code)


class GrantUnreachable(Exception):
    """The token endpoint could not be reached or answered garbage."""


def need(module: str, provider: str) -> Any:
    return require(module, extra=EXTRA, feature=f"auth: oauth2 with provider {provider}")


def lifetime(result: dict[str, Any]) -> float:
    """Seconds the token is valid, from ``expires_in`` (or ``expires_at``); an hour if unsaid."""
    if result.get("expires_in"):
        return float(result["expires_in"])
    if result.get("expires_at"):
        return float(result["expires_at"]) - time.time()
    return 3600.0


def network_errors() -> tuple[type[BaseException], ...]:
    requests = need("requests", "microsoft, google or generic")
    return (requests.RequestException, OSError, ValueError)


# ---------------------------------------------------------------------- microsoft (msal)
def _certificate(pem: str) -> dict[str, str]:
    """msal's client_credential for a certificate: the key and the SHA-1 thumbprint of the cert."""
    x509 = need("cryptography.x509", "microsoft")
    serialization = need("cryptography.hazmat.primitives.serialization", "microsoft")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise GrantRefused(
            "invalid_client", "client_certificate_file holds no PEM certificate"
        ) from None
    der = cert.public_bytes(serialization.Encoding.DER)
    return {"private_key": pem, "thumbprint": hashlib.sha1(der).hexdigest()}  # noqa: S324 - x5t


def microsoft(
    settings: OAuth2, username: str, secret: SecretStr | None, refresh_token: SecretStr | None
) -> Grant:
    msal = need("msal", "microsoft")
    kwargs: dict[str, Any] = {
        "authority": settings.effective_authority,
        "token_cache": msal.TokenCache(),  # the cache is ours (tokens.py)
        "timeout": settings.timeout,
    }
    if settings.authority:  # not a Microsoft cloud msal knows: no instance discovery there
        kwargs["instance_discovery"] = False
    scopes = list(settings.effective_scopes)
    try:
        credential: Any = None
        if secret is not None:
            value = secret.get_secret_value()
            credential = _certificate(value) if settings.client_certificate_file else value
        if settings.flow == "app-only":
            app = msal.ConfidentialClientApplication(
                settings.client_id, client_credential=credential, **kwargs
            )
            result = app.acquire_token_for_client(scopes)
        else:
            if refresh_token is None:
                raise GrantRefused("no_refresh_token", "no sign-in stored")
            if credential is not None:
                app = msal.ConfidentialClientApplication(
                    settings.client_id, client_credential=credential, **kwargs
                )
            else:
                app = msal.PublicClientApplication(settings.client_id, **kwargs)
            result = app.acquire_token_by_refresh_token(refresh_token.get_secret_value(), scopes)
    except GrantRefused:
        raise
    except network_errors() as exc:
        raise GrantUnreachable(f"{type(exc).__name__}: {exc}") from None
    if "access_token" not in result:
        raise GrantRefused(str(result.get("error", "error")), result.get("error_description", ""))
    rt = result.get("refresh_token")
    return Grant(SecretStr(result["access_token"]), lifetime(result), SecretStr(rt) if rt else None)


# ---------------------------------------------------------------------- google (google-auth)
def _google_request(timeout: float) -> Callable[..., Any]:
    transport = need("google.auth.transport.requests", "google")
    inner = transport.Request()

    def request(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout)
        return inner(*args, **kwargs)

    return request


def google(
    settings: OAuth2, username: str, secret: SecretStr | None, refresh_token: SecretStr | None
) -> Grant:
    service_account = need("google.oauth2.service_account", "google")
    exceptions = need("google.auth.exceptions", "google")
    if secret is None:
        raise GrantRefused("invalid_client", "no service account key")
    try:
        info = json.loads(secret.get_secret_value())
    except ValueError:
        raise GrantRefused("invalid_client", "the service account key is not JSON") from None
    if not isinstance(info, dict):
        raise GrantRefused("invalid_client", "the service account key is not a JSON object")
    if settings.token_endpoint:
        info["token_uri"] = settings.token_endpoint
    try:
        creds = service_account.Credentials.from_service_account_info(
            info, scopes=list(settings.effective_scopes), subject=username
        )
        creds.refresh(_google_request(settings.timeout))
    except exceptions.RefreshError as exc:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        code = str(data.get("error") or "refused")
        raise GrantRefused(code, str(data.get("error_description") or exc.args[0])) from None
    except (exceptions.TransportError, *network_errors()) as exc:
        raise GrantUnreachable(f"{type(exc).__name__}: {exc}") from None
    expiry = creds.expiry  # google-auth: a naive UTC datetime
    if expiry is None:
        return Grant(SecretStr(creds.token), 3600.0)
    aware = expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)
    return Grant(SecretStr(creds.token), aware.timestamp() - time.time())


# ---------------------------------------------------------------------- generic (authlib)
def generic(
    settings: OAuth2, username: str, secret: SecretStr | None, refresh_token: SecretStr | None
) -> Grant:
    client = need("authlib.integrations.requests_client", "generic")
    scope = " ".join(settings.effective_scopes) or None
    session = client.OAuth2Session(
        settings.client_id,
        secret.get_secret_value() if secret is not None else None,
        scope=scope,
        token_endpoint_auth_method="client_secret_post" if secret is not None else "none",
    )
    try:
        if settings.flow == "app-only":
            token = session.fetch_token(
                settings.token_endpoint, grant_type="client_credentials", timeout=settings.timeout
            )
        else:
            if refresh_token is None:
                raise GrantRefused("no_refresh_token", "no sign-in stored")
            token = session.refresh_token(
                settings.token_endpoint,
                refresh_token=refresh_token.get_secret_value(),
                timeout=settings.timeout,
            )
    except client.OAuthError as exc:
        raise GrantRefused(str(exc.error), str(exc.description or "")) from None
    except GrantRefused:
        raise
    except network_errors() as exc:
        raise GrantUnreachable(f"{type(exc).__name__}: {exc}") from None
    finally:
        session.close()
    rt = token.get("refresh_token")
    return Grant(
        SecretStr(token["access_token"]), lifetime(dict(token)), SecretStr(rt) if rt else None
    )


FETCHERS: dict[str, Callable[[OAuth2, str, SecretStr | None, SecretStr | None], Grant]] = {
    "microsoft": microsoft,
    "google": google,
    "generic": generic,
}
