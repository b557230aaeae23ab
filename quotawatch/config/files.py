"""What ``config check`` can know without a server: CA files, state_dir, secret files and their modes."""

from __future__ import annotations

import os
import ssl
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from quotawatch.config import Account, Config
from quotawatch.config.secrets import SecretCache, read_secret
from quotawatch.errors import SecretError

Problems = list[tuple[str, str]]


def ca_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a ``ca_file``, or None when it holds a PEM CA certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError:  # before OSError, its base class
        return f"{path} holds no PEM CA certificate"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def state_dir_problems(path: Path, loc: str = "state_dir") -> Problems:
    """Whether ``state_dir`` exists and takes a new file, or can be created (nothing is created)."""
    problems = _dir_problems(path, loc)
    if problems or not path.exists():
        return problems
    for name in ("state.sqlite3", "audit.jsonl"):
        file = path / name
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            return [(loc, f"cannot write {file}: permission denied")]
    return []


def _dir_problems(path: Path, loc: str) -> Problems:
    """Whether the folder ``path`` takes a new file, or can be created (nothing is created)."""
    if path.exists():
        if not path.is_dir():
            return [(loc, f"{path} is not a directory")]
        try:
            with tempfile.TemporaryFile(dir=path, prefix=".qw-check-"):
                pass
        except OSError as exc:
            return [(loc, f"cannot write in {path}: {exc.strerror or exc}")]
        return []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [(loc, f"cannot create {path}: {parent} is not a directory")]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [(loc, f"cannot create {path}: no permission to write in {parent}")]
    return []


def _readable(loc: str, path: Path | None, private: bool = False) -> Problems:
    if path is None:
        return []
    try:
        st = path.stat()
        with path.open("rb"):
            pass
    except OSError as exc:
        return [(loc, f"cannot read {path}: {exc.strerror or exc}")]
    if private and st.st_mode & 0o004:
        return [(loc, f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o})")]
    return []


def _field(file: object, env: object) -> str:
    return "password_file" if file else "password_env" if env else "password_credential"


def _secret(loc: str, file: Path | None, env: str | None, cred: str | None) -> Problems:
    field = _field(file, env)
    try:
        read_secret(file=file, env=env, credential=cred)
    except SecretError as exc:
        return [(f"{loc}.{field}", str(exc))]
    return []


def account_secret_problems(
    config: Config, accounts: Sequence[Account], secrets: SecretCache
) -> Problems:
    """Every account's password source, at ``accounts[i].password_file`` (or its source's name)."""
    where = {a.name: f"accounts[{i}]" for i, a in enumerate(config.accounts)}
    problems: Problems = []
    reported: set[tuple[str | None, str | None, str | None]] = set()
    for acct in accounts:
        if acct.oauth2 is not None:
            problems += _client_secret_problem(acct, where, secrets, reported)
            continue
        key = (str(acct.password_file or ""), acct.password_env, acct.password_credential)
        try:
            secrets.get(acct.password_file, acct.password_env, acct.password_credential)
        except SecretError as exc:
            if key in reported:  # 1,000 accounts sharing one bad file: say it once
                continue
            reported.add(key)
            loc = where.get(acct.name, f"account {acct.name}")
            problems.append((f"{loc}.{_field(acct.password_file, acct.password_env)}", str(exc)))
    return problems


def _client_secret_problem(
    acct: Account,
    where: dict[str, str],
    secrets: SecretCache,
    reported: set[tuple[str | None, str | None, str | None]],
) -> Problems:
    """An ``auth: oauth2`` account's client secret (app-only, or where one is configured)."""
    o = acct.oauth2
    assert o is not None
    if o.flow != "app-only" and not o.has_secret and o.client_certificate_file is None:
        return []  # a public client: the refresh token from `auth login` is all it needs
    file = o.client_certificate_file or o.client_secret_file
    key = (str(file or ""), o.client_secret_env, o.client_secret_credential)
    try:
        secrets.client_secret(o)
    except SecretError as exc:
        if key in reported:
            return []
        reported.add(key)
        field = (
            "client_certificate_file" if o.client_certificate_file
            else "client_secret_file" if o.client_secret_file
            else "client_secret_env" if o.client_secret_env else "client_secret_credential"
        )  # fmt: skip
        return [(f"{where.get(acct.name, f'account {acct.name}')}.oauth2.{field}", str(exc))]
    return []


def file_problems(config: Config) -> Problems:
    """Every problem with the files the config names (except account passwords), in file order."""
    problems = state_dir_problems(config.state_dir)
    owners = [(f"accounts[{i}]", a.ca_file) for i, a in enumerate(config.accounts)]
    owners += [
        (f"account_sources[{i}].template", s.template.ca_file)
        for i, s in enumerate(config.account_sources)
    ]
    if config.smtp is not None:
        owners.append(("smtp", config.smtp.ca_file))
    for loc, ca_file in owners:
        if ca_file is not None and "{user}" not in str(ca_file):
            why = ca_file_problem(ca_file)
            if why:
                problems.append((f"{loc}.ca_file", why))
    for name, rule in config.rules.items():
        if rule.archive_dir:  # the part before {account} must take new folders
            fixed = Path(rule.archive_dir.split("{account}")[0] or ".")
            problems += _dir_problems(fixed, f"rules.{name}.archive_dir")
    m = config.metrics
    problems += _readable("metrics.tls_cert_file", m.tls_cert_file)
    problems += _readable("metrics.tls_key_file", m.tls_key_file, private=True)
    if m.basic_auth_password_file is not None:
        try:
            read_secret(file=m.basic_auth_password_file)
        except SecretError as exc:
            problems.append(("metrics.basic_auth_password_file", str(exc)))
    smtp = config.smtp
    if smtp is not None and smtp.username:
        problems += _secret("smtp", smtp.password_file, smtp.password_env, smtp.password_credential)
    return problems
