"""Expand the configured accounts and account sources into the list of mailboxes to watch."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from quotawatch.config import Account, AccountSource, Config
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import ConfigError, SecretError

log = logging.getLogger(__name__)


def _read_usernames(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def _expand(value: Any, user: str) -> Any:
    if isinstance(value, str):
        return value.replace("{user}", user)
    if isinstance(value, list):
        return [_expand(v, user) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, user) for k, v in value.items()}
    return value


def read_usernames(
    source: AccountSource, base: Path | None = None, where: str = "account_sources"
) -> list[str]:
    """The usernames of a ``usernames_file`` source; an unreadable file raises ConfigError."""
    path = source.usernames_file
    assert path is not None, "not a usernames_file source"
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        return _read_usernames(path)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ConfigError(
            str(path), [(f"{where}.usernames_file", f"cannot read {path}: {why}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            str(path), [(f"{where}.usernames_file", f"{path} is not valid UTF-8")]
        ) from None


def expand_source(
    source: AccountSource,
    where: str,
    base: Path | None = None,
    users: Sequence[str] | None = None,
) -> list[Account]:
    """One Account per username (``users``, else the source's file); problems raise ConfigError.

    A doveadm source needs ``users`` (fetched by the service); a name there that cannot be a
    username is skipped with a warning rather than failing the whole list.
    """
    from_server = users is not None
    if users is None:
        if source.usernames_file is None:
            return []
        users = read_usernames(source, base, where)
    path = f"{where}.doveadm"
    if source.usernames_file is not None:
        file = source.usernames_file
        path = str(base / file if base is not None and not file.is_absolute() else file)
    template = source.template.model_dump(exclude_unset=True, by_alias=True)
    template.setdefault("name", "{user}")
    if source.doveadm is not None and "doveadm" not in template:
        template["doveadm"] = source.doveadm.model_dump(exclude_unset=True)
    accounts = []
    problems: list[tuple[str, str]] = []
    for lineno, user in enumerate(users, 1):
        if any(c in user for c in ' \t\r\n"{}') or not user:
            if from_server:
                log.warning("%s: skipping user %r: not usable as a username", where, user)
                continue
            problems.append(
                (f"{where}.usernames_file", f"line {lineno}: invalid username {user!r}")
            )
            continue
        data = {k: _expand(v, user) for k, v in template.items()}
        try:
            accounts.append(Account.model_validate(data))
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(
                    (
                        f"{where}.template.{loc}" if loc else f"{where}.template",
                        f"for user {user!r}: {err['msg'].removeprefix('Value error, ')}",
                    )
                )
    if problems:
        raise ConfigError(path, problems)
    return accounts


def config_base(config_path: str) -> Path | None:
    """The folder relative paths of the config are taken from."""
    return Path(config_path).resolve().parent if config_path != "<config>" else None


def all_accounts(
    config: Config,
    config_path: str = "<config>",
    users: Mapping[int, Sequence[str]] | None = None,
) -> list[Account]:
    """Explicit accounts first, then every account source, with duplicate names refused.

    ``users`` gives the usernames of sources by index (the doveadm sources, fetched by the
    service, or a kept list); a doveadm source without an entry contributes no accounts.
    """
    result = list(config.accounts)
    problems: list[tuple[str, str]] = []
    base = config_base(config_path)
    for i, source in enumerate(config.account_sources):
        try:
            given = (users or {}).get(i)
            result += expand_source(source, f"account_sources[{i}]", base, given)
        except ConfigError as exc:
            problems += exc.problems
    seen: set[str] = set()
    for acct in result:
        if acct.name in seen:
            problems.append(("account_sources", f"account name {acct.name!r} appears twice"))
        seen.add(acct.name)
    if problems:
        raise ConfigError(config_path, problems)
    return result


def select_accounts(accounts: Sequence[Account], names: Iterable[str] | None) -> list[Account]:
    """The accounts named (all when none are), each once; an unknown name is an error."""
    wanted = list(dict.fromkeys(names or []))
    if not wanted:
        return list(accounts)
    by_name = {a.name: a for a in accounts}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ConfigError("--account", [("", f"unknown account {n!r}") for n in unknown])
    return [by_name[n] for n in wanted]


def password_problems(accounts: Sequence[Account], secrets: SecretCache) -> list[tuple[str, str]]:
    """Check that every account's password source can be read (config check)."""
    problems = []
    for acct in accounts:
        try:
            secrets.get(acct.password_file, acct.password_env, acct.password_credential)
        except SecretError as exc:
            problems.append((f"account {acct.name}", str(exc)))
    return problems


def password_for(account: Account, secrets: SecretCache) -> SecretStr:
    """The secret to log in with: the password, or (auth: oauth2) a valid access token."""
    if account.oauth2 is not None:
        if secrets.tokens is None:
            raise SecretError(f"account {account.name}", "auth: oauth2 but no token source")
        return secrets.tokens.access_token(account.oauth2, account.username, account.name)
    return secrets.get(account.password_file, account.password_env, account.password_credential)
