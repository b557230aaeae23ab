"""Expand the configured accounts and account sources into the list of mailboxes to watch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from quotawatch.config import Account, AccountSource, Config
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import ConfigError, SecretError


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


def expand_source(source: AccountSource, where: str, base: Path | None = None) -> list[Account]:
    """One Account per username in the source's file; problems raise ConfigError with ``where``."""
    path = source.usernames_file
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        users = _read_usernames(path)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ConfigError(
            str(path), [(f"{where}.usernames_file", f"cannot read {path}: {why}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            str(path), [(f"{where}.usernames_file", f"{path} is not valid UTF-8")]
        ) from None
    template = source.template.model_dump(exclude_unset=True, by_alias=True)
    template.setdefault("name", "{user}")
    accounts = []
    problems: list[tuple[str, str]] = []
    for lineno, user in enumerate(users, 1):
        if any(c in user for c in ' \t\r\n"{}'):
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
        raise ConfigError(str(path), problems)
    return accounts


def all_accounts(config: Config, config_path: str = "<config>") -> list[Account]:
    """Explicit accounts first, then every account source, with duplicate names refused."""
    result = list(config.accounts)
    problems: list[tuple[str, str]] = []
    base = Path(config_path).resolve().parent if config_path != "<config>" else None
    for i, source in enumerate(config.account_sources):
        try:
            result += expand_source(source, f"account_sources[{i}]", base)
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
