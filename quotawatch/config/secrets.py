"""Resolve passwords from files, environment variables or systemd credentials into ``SecretStr``."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import SecretStr

from quotawatch.errors import SecretError

if TYPE_CHECKING:
    from quotawatch.config.oauth2 import OAuth2


class TokenSource(Protocol):
    """Gives OAuth2 access tokens (implemented by ``quotawatch.mail.oauth2``)."""

    def access_token(self, settings: OAuth2, username: str, label: str) -> SecretStr:
        """A valid access token for ``username``; ``label`` names the account in errors."""
        ...


def _read_file(
    path: Path, source: str, *, check_mode: bool = True, whole: bool = False
) -> SecretStr:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(source, "file not found") from None
    except PermissionError:
        raise SecretError(source, "permission denied") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(source, "not a regular file")
    if check_mode and st.st_mode & 0o077:
        raise SecretError(
            source,
            f"readable or writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            "run chmod 600 on it",
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecretError(source, f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(source, "not valid UTF-8") from None
    if whole:  # a PEM or JSON key: several lines
        if not text.strip():
            raise SecretError(source, "is empty")
        return SecretStr(text)
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecretError(source, "is empty")
    if "\n" in text:
        raise SecretError(source, "must hold one line")
    return SecretStr(text)


def read_secret(
    *,
    file: Path | None = None,
    env: str | None = None,
    credential: str | None = None,
    environ: Mapping[str, str] | None = None,
    kind: str = "password",
    whole: bool = False,
) -> SecretStr:
    """Read exactly one secret source; errors name the source (``{kind}_file PATH``), never the value.

    ``whole``: a file may hold several lines (a PEM or JSON key) and is taken as it is.
    """
    environ = os.environ if environ is None else environ
    if file is not None:
        return _read_file(Path(file), f"{kind}_file {file}", whole=whole)
    if credential is not None:
        source = f"{kind}_credential {credential}"
        if "/" in credential or credential in (".", ".."):
            raise SecretError(source, "a credential name cannot contain '/'")
        directory = environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                source,
                "$CREDENTIALS_DIRECTORY is not set; run under systemd with "
                f"LoadCredential={credential}:/path/to/file",
            )
        # systemd makes credential files private to the service; no mode check needed there
        return _read_file(Path(directory) / credential, source, check_mode=False, whole=whole)
    if env is not None:
        source = f"{kind}_env {env}"
        value = environ.get(env)
        if value is None:
            raise SecretError(source, "variable is not set")
        if not value:
            raise SecretError(source, "variable is empty")
        return SecretStr(value)
    raise SecretError(kind, f"no {kind} source given")


class SecretCache:
    """Reads each distinct secret source once, so 10,000 accounts sharing one file read it once."""

    def __init__(
        self, environ: Mapping[str, str] | None = None, tokens: TokenSource | None = None
    ) -> None:
        self._environ = environ
        self._cache: dict[tuple[str, str | None, str | None, str | None], SecretStr] = {}
        #: where OAuth2 access tokens come from (set by the CLI and the daemon)
        self.tokens = tokens

    def get(
        self,
        file: Path | None,
        env: str | None,
        credential: str | None,
        *,
        kind: str = "password",
        whole: bool = False,
    ) -> SecretStr:
        key = (kind, str(file) if file is not None else None, env, credential)
        if key not in self._cache:
            self._cache[key] = read_secret(
                file=file, env=env, credential=credential, environ=self._environ, kind=kind,
                whole=whole,
            )  # fmt: skip
        return self._cache[key]

    def client_secret(self, settings: OAuth2) -> SecretStr:
        """The OAuth2 client secret (or certificate / service-account key) of ``settings``."""
        if settings.client_certificate_file is not None:
            return self.get(
                settings.client_certificate_file, None, None, kind="client_certificate",
                whole=True,
            )  # fmt: skip
        return self.get(
            settings.client_secret_file,
            settings.client_secret_env,
            settings.client_secret_credential,
            kind="client_secret",
            whole=settings.provider == "google",
        )
