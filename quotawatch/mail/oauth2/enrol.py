"""Delegated sign-in by the device-code flow (RFC 8628): show the URL and code, wait, return the refresh token."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from quotawatch.config.oauth2 import OAuth2
from quotawatch.mail.oauth2.providers import (
    Grant,
    GrantRefused,
    GrantUnreachable,
    lifetime,
    need,
    network_errors,
)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def device_login(
    settings: OAuth2,
    secret: SecretStr | None,
    show: Callable[[str], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Grant:
    """Run the device-code flow; ``show`` gets the instruction line for the person. Blocks until
    the person has signed in, or raises GrantRefused (declined, expired) / GrantUnreachable."""
    try:
        if settings.provider == "microsoft":
            grant = _microsoft(settings, secret, show)
        elif settings.provider == "generic":
            grant = _generic(settings, secret, show, sleep)
        else:
            raise GrantRefused("unsupported", f"provider {settings.provider} has no device flow")
    except (GrantRefused, GrantUnreachable):
        raise
    except network_errors() as exc:
        raise GrantUnreachable(f"{type(exc).__name__}: {exc}") from None
    if grant.refresh_token is None:
        raise GrantRefused(
            "no_refresh_token", "the provider gave no refresh token (is offline access allowed?)"
        )
    return grant


def _microsoft(settings: OAuth2, secret: SecretStr | None, show: Callable[[str], None]) -> Grant:
    msal = need("msal", "microsoft")
    kwargs: dict[str, Any] = {
        "authority": settings.effective_authority,
        "token_cache": msal.TokenCache(),
        "timeout": settings.timeout,
    }
    if settings.authority:
        kwargs["instance_discovery"] = False
    if secret is not None:
        app = msal.ConfidentialClientApplication(
            settings.client_id, client_credential=secret.get_secret_value(), **kwargs
        )
    else:
        app = msal.PublicClientApplication(settings.client_id, **kwargs)
    scopes = list(settings.effective_scopes)
    flow = app.initiate_device_flow(scopes=scopes)
    if "user_code" not in flow:
        raise GrantRefused(str(flow.get("error", "error")), str(flow.get("error_description", "")))
    show(str(flow["message"]))
    result = app.acquire_token_by_device_flow(flow)
    if "access_token" not in result:
        raise GrantRefused(str(result.get("error", "error")), result.get("error_description", ""))
    rt = result.get("refresh_token")
    return Grant(
        SecretStr(result["access_token"]),
        lifetime(result),
        SecretStr(rt) if rt else None,
    )


def _generic(
    settings: OAuth2,
    secret: SecretStr | None,
    show: Callable[[str], None],
    sleep: Callable[[float], None],
) -> Grant:
    requests = need("requests", "generic")
    if not settings.device_authorization_endpoint:
        raise GrantRefused("unsupported", "oauth2.device_authorization_endpoint is not set")
    form = {"client_id": settings.client_id, "scope": " ".join(settings.effective_scopes)}
    if secret is not None:
        form["client_secret"] = secret.get_secret_value()
    answer = requests.post(
        settings.device_authorization_endpoint, data=form, timeout=settings.timeout
    )
    flow = answer.json()
    if "device_code" not in flow:
        raise GrantRefused(str(flow.get("error", "error")), str(flow.get("error_description", "")))
    uri = flow.get("verification_uri_complete") or flow.get("verification_uri")
    show(flow.get("message") or f"Open {uri} and enter the code {flow.get('user_code')}")
    interval = float(flow.get("interval") or 5)
    deadline = time.monotonic() + float(flow.get("expires_in") or 900)
    poll = {"grant_type": DEVICE_GRANT, "device_code": flow["device_code"], **form}
    poll.pop("scope", None)
    while time.monotonic() < deadline:
        sleep(interval)
        got = requests.post(settings.token_endpoint, data=poll, timeout=settings.timeout).json()
        if "access_token" in got:
            rt = got.get("refresh_token")
            return Grant(
                SecretStr(got["access_token"]),
                lifetime(got),
                SecretStr(rt) if rt else None,
            )
        error = str(got.get("error", "error"))
        if error == "slow_down":
            interval += 5
        elif error != "authorization_pending":
            raise GrantRefused(error, str(got.get("error_description", "")))
    raise GrantRefused("expired_token", "the device code expired before sign-in")
