"""A small local OAuth2/OpenID provider over TLS for tests: msal, google-auth, authlib and Dovecot talk to it unchanged.

It serves, below ``https://127.0.0.1:PORT/<tenant>``:

* ``/v2.0/.well-known/openid-configuration`` (also ``/.well-known/openid-configuration``):
  discovery with ``authorization_endpoint`` (msal insists on it), token, device-code,
  revocation and introspection endpoints;
* ``/oauth2/v2.0/token``: client credentials (secret, or a client assertion signed with a
  registered certificate key as msal sends it), refresh token (rotating), device code, and the
  JWT bearer grant of Google service accounts (signature checked against the registered key;
  google-auth always puts ``aud=https://oauth2.googleapis.com/token`` in it, so that is accepted);
* ``/oauth2/v2.0/devicecode``: starts a device flow that a test approves with :meth:`approve`;
* ``/oauth2/v2.0/revoke``; ``/introspect`` for Dovecot's oauth2 passdb (``introspection_mode =
  post``): ``active``, ``sub``, and ``mailboxes`` (",alice,bob,", the mailboxes the token may open).

The certificate comes from a throw-away trustme CA (``ca_file``); point ``REQUESTS_CA_BUNDLE`` at
it. Access tokens are JWT-shaped and about 1.5 KB long, as Microsoft's are. Every token request is
recorded in :attr:`OAuthServer.grants` so tests can count them.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import trustme

from sandbox.oauth_http import Handler, error

__all__ = ["OAuthServer"]

GOOGLE_AUD = "https://oauth2.googleapis.com/token"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Client:
    """A registered application: secret or certificate key, and the mailboxes it was granted."""

    client_id: str
    secret: str | None = None
    public_key_pem: bytes | None = None  # certificate or service-account key
    client_email: str | None = None  # Google service account
    mailboxes: tuple[str, ...] = ()


@dataclass
class Issued:
    """An access or refresh token and what it grants."""

    client_id: str
    subject: str | None
    mailboxes: tuple[str, ...]
    scope: str
    expires_at: float
    revoked: bool = False


@dataclass
class DeviceFlow:
    client_id: str
    scope: str
    user_code: str
    expires_at: float
    user: str | None = None


@dataclass
class OAuthServer:
    """One provider on a free loopback port; ``start()`` then use ``url``, ``ca_file``."""

    directory: Path
    tenant: str = "contoso"
    token_lifetime: int = 3600
    host: str = "127.0.0.1"
    clients: dict[str, Client] = field(default_factory=dict)
    tokens: dict[str, Issued] = field(default_factory=dict)
    refresh_tokens: dict[str, Issued] = field(default_factory=dict)
    flows: dict[str, DeviceFlow] = field(default_factory=dict)
    #: (grant_type, client_id, subject) of every token request, in order
    grants: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: introspection answers given, (active, sub)
    introspections: list[tuple[bool, str | None]] = field(default_factory=list)
    #: Microsoft Graph's mailbox usage report: user principal name -> (bytes used, quota)
    mailbox_usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: apps without Reports.Read.All: Graph refuses them the report (HTTP 403)
    graph_forbidden: set[str] = field(default_factory=set)
    #: Graph requests answered, (path, authorized)
    graph_requests: list[tuple[str, bool]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.directory / "oauth-ca.pem"
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> OAuthServer:
        ca = trustme.CA(organization_name="quotawatch sandbox OAuth CA")
        cert = ca.issue_cert(self.host, "localhost")
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.ca_file.chmod(0o644)  # Dovecot's auth process (user dovecot) reads it
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        server = self

        class Bound(Handler):
            provider = server

        httpd = ThreadingHTTPServer((self.host, 0), Bound)
        httpd.daemon_threads = True
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="oauth-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        """What msal takes as ``authority``."""
        return f"{self.url}/{self.tenant}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def device_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/devicecode"

    @property
    def graph_url(self) -> str:
        """What ``oauth2.graph_url`` points at."""
        return f"{self.url}/graph"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    # ------------------------------------------------------------------ test API
    def register_client(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        public_key_pem: bytes | None = None,
        client_email: str | None = None,
        mailboxes: tuple[str, ...] = (),
    ) -> Client:
        client = Client(client_id, secret, public_key_pem, client_email, tuple(mailboxes))
        self.clients[client_id] = client
        return client

    def approve(self, user_code: str, user: str) -> None:
        """The person signs in at the verification URL and enters ``user_code``."""
        with self._lock:
            for flow in self.flows.values():
                if flow.user_code == user_code:
                    flow.user = user
                    return
        raise KeyError(user_code)

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [f.user_code for f in self.flows.values() if f.user is None]

    def revoke_refresh_tokens(self, subject: str) -> None:
        with self._lock:
            for issued in self.refresh_tokens.values():
                if issued.subject == subject:
                    issued.revoked = True

    def expire_access_tokens(self) -> None:
        with self._lock:
            for issued in self.tokens.values():
                issued.expires_at = 0

    def count(self, grant_type: str) -> int:
        return sum(1 for g, _c, _s in self.grants if g == grant_type)

    # ------------------------------------------------------------------ endpoints
    def discovery(self) -> dict[str, Any]:
        base = f"{self.authority}/oauth2/v2.0"
        return {
            "issuer": f"{self.authority}/v2.0",
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": self.token_endpoint,
            "device_authorization_endpoint": self.device_endpoint,
            "revocation_endpoint": f"{base}/revoke",
            "introspection_endpoint": self.introspection_url,
            "jwks_uri": f"{self.authority}/discovery/v2.0/keys",
            "response_types_supported": ["code"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["HS256"],
            "grant_types_supported": ["client_credentials", "refresh_token", DEVICE_GRANT],
        }

    def _issue(
        self, client: Client, subject: str | None, scope: str, refresh: bool
    ) -> dict[str, Any]:
        now = time.time()
        mailboxes = (subject,) if subject else client.mailboxes
        claims = {
            "aud": "https://outlook.office365.com", "iss": f"{self.authority}/v2.0",
            "iat": int(now), "exp": int(now + self.token_lifetime), "appid": client.client_id,
            "sub": subject or client.client_id, "scp": scope, "jti": secrets.token_hex(8),
            "pad": secrets.token_urlsafe(900),
        }  # fmt: skip
        access = jwt.encode(claims, self._key, algorithm="HS256")
        issued = Issued(client.client_id, subject, mailboxes, scope, now + self.token_lifetime)
        answer: dict[str, Any] = {
            "token_type": "Bearer", "access_token": access, "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime, "scope": scope,
        }  # fmt: skip
        with self._lock:
            self.tokens[access] = issued
            if refresh:
                rt = "rt." + secrets.token_urlsafe(48)
                self.refresh_tokens[rt] = Issued(
                    client.client_id, subject, mailboxes, scope, now + 90 * 86400
                )
                answer["refresh_token"] = rt
        if subject and refresh:
            uid = _b64(json.dumps({"uid": subject, "utid": self.tenant}).encode())
            answer["client_info"] = uid
            answer["id_token"] = jwt.encode(
                {"aud": client.client_id, "iss": f"{self.authority}/v2.0", "sub": subject,
                 "oid": subject, "tid": self.tenant, "preferred_username": subject,
                 "iat": int(now), "exp": int(now + 3600)},
                self._key, algorithm="HS256",
            )  # fmt: skip
        return answer

    def token(
        self, form: dict[str, str], basic: tuple[str, str] | None
    ) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        client_id = form.get("client_id") or (basic[0] if basic else "")
        if grant == JWT_BEARER:
            return self._jwt_bearer(form)
        client = self.clients.get(client_id)
        if client is None:
            return 400, error("invalid_client", f"AADSTS700016: application {client_id} not found")
        scope = form.get("scope", "")
        self.grants.append((grant, client_id, None))
        if grant == "client_credentials":
            problem = self._authenticate_client(client, form, basic)
            if problem:
                return 401, error("invalid_client", problem)
            return 200, self._issue(client, None, scope, refresh=False)
        if grant == "refresh_token":
            with self._lock:
                old = self.refresh_tokens.get(form.get("refresh_token", ""))
                if old is None or old.revoked or old.client_id != client_id:
                    return 400, error(
                        "invalid_grant", "AADSTS50173: the refresh token was revoked or is invalid"
                    )
                old.revoked = True  # rotation: a refresh token is used once
            self.grants[-1] = (grant, client_id, old.subject)
            return 200, self._issue(client, old.subject, scope or old.scope, refresh=True)
        if grant == DEVICE_GRANT:
            with self._lock:
                flow = self.flows.get(form.get("device_code", ""))
            if flow is None or flow.client_id != client_id or flow.expires_at < time.time():
                return 400, error("expired_token", "AADSTS70019: the device code expired")
            if flow.user is None:
                return 400, error("authorization_pending", "AADSTS70016: pending")
            with self._lock:
                self.flows.pop(form["device_code"], None)
            self.grants[-1] = (grant, client_id, flow.user)
            return 200, self._issue(client, flow.user, flow.scope, refresh=True)
        return 400, error("unsupported_grant_type", f"grant {grant!r} is not supported")

    def _authenticate_client(
        self, client: Client, form: dict[str, str], basic: tuple[str, str] | None
    ) -> str | None:
        if form.get("client_assertion_type") == ASSERTION_TYPE:
            if client.public_key_pem is None:
                return "AADSTS700027: no certificate registered"
            try:
                jwt.decode(
                    form.get("client_assertion", ""), client.public_key_pem,
                    algorithms=["RS256", "PS256"], audience=self.token_endpoint,
                )  # fmt: skip
            except jwt.PyJWTError as exc:
                return f"AADSTS700027: client assertion invalid: {exc}"
            return None
        secret = form.get("client_secret") or (basic[1] if basic else None)
        if (
            client.secret is None
            or secret is None
            or not secrets.compare_digest(secret, client.secret)
        ):
            return "AADSTS7000215: invalid client secret"
        return None

    def _jwt_bearer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        assertion = form.get("assertion", "")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return 400, error("invalid_grant", "assertion is not a JWT")
        client = next(
            (c for c in self.clients.values() if c.client_email == unverified.get("iss")), None
        )
        if client is None or client.public_key_pem is None:
            return 400, error("invalid_grant", "unknown service account")
        try:
            claims = jwt.decode(
                assertion, client.public_key_pem, algorithms=["RS256"],
                audience=[GOOGLE_AUD, self.token_endpoint],
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            return 400, error("invalid_grant", f"invalid JWT signature or claims: {exc}")
        subject = claims.get("sub")
        self.grants.append((JWT_BEARER, client.client_id, subject))
        if subject and subject not in client.mailboxes:
            return 401, error("unauthorized_client", "client not authorized for this subject")
        return 200, self._issue(client, subject, str(claims.get("scope", "")), refresh=False)

    def device_code(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_id = form.get("client_id", "")
        if client_id not in self.clients:
            return 400, error("invalid_client", "unknown client")
        code = secrets.token_urlsafe(24)
        user_code = "".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8))
        with self._lock:
            self.flows[code] = DeviceFlow(
                client_id, form.get("scope", ""), user_code, time.time() + 900
            )
        verify = f"{self.url}/devicelogin"
        return 200, {
            "device_code": code, "user_code": user_code, "verification_uri": verify,
            "expires_in": 900, "interval": 1,
            "message": f"To sign in, use a web browser to open the page {verify} and enter the "
            f"code {user_code} to authenticate.",
        }  # fmt: skip

    def revoke(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token = form.get("token", "")
        with self._lock:
            for table in (self.tokens, self.refresh_tokens):
                if token in table:
                    table[token].revoked = True
        return 200, {}

    def introspect(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            issued = self.tokens.get(form.get("token", ""))
        active = issued is not None and not issued.revoked and issued.expires_at > time.time()
        self.introspections.append((active, issued.subject if issued else None))
        if not active or issued is None:
            return 200, {"active": False}
        return 200, {
            "active": True, "client_id": issued.client_id, "scope": issued.scope,
            "sub": issued.subject or issued.client_id, "resource": "mail",
            "mailboxes": "," + ",".join(issued.mailboxes) + ",",
            "exp": int(issued.expires_at),
        }  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
