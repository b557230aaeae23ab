"""Expand the configured accounts and account sources into the list of mailboxes to watch."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import SecretStr, ValidationError

from quotawatch.config import Account, AccountSource, Config
from quotawatch.config.account import EXPLICIT_SOURCE
from quotawatch.config.base import _check_email
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


_PLACEHOLDER = re.compile(r"\{(user|email)\}")
#: the account fields that say where its quota comes from
_DOVEADM_FIELDS = frozenset({"doveadm", "quota_source"})


class Listed(NamedTuple):
    """One user a source lists: the username ({user}) and, from LDAP, the address ({email})."""

    user: str
    email: str | None = None


def usable_username(user: str) -> bool:
    """Whether ``user`` can stand for {user}: not empty, no blanks, quotes, braces or controls."""
    return bool(user) and not any(c in ' "{}' or ord(c) < 0x20 or c == "\x7f" for c in user)


def _expand(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_expand(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, values) for k, v in value.items()}
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


class _Skipped:
    """Warns about the first few users a source skips, then counts the rest (no log floods)."""

    SHOWN = 5

    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0

    def __call__(self, user: str, why: str) -> None:
        self.count += 1
        if self.count <= self.SHOWN:
            log.warning("%s: skipping user %r: %s", self.where, user, why)

    def close(self) -> None:
        if self.count > self.SHOWN:
            log.warning("%s: skipped %d more users", self.where, self.count - self.SHOWN)


def _template(source: AccountSource) -> dict[str, Any]:
    template = source.template.model_dump(exclude_unset=True, by_alias=True)
    template.setdefault("name", "{user}")
    if source.doveadm is not None and "doveadm" not in template:
        template["doveadm"] = source.doveadm.model_dump(exclude_unset=True)
    if source.ldap is not None and source.ldap.email_attribute:
        template.setdefault("email", "{email}")
    return template


def _fill(template: dict[str, Any], entry: Listed, skip: _Skipped) -> dict[str, Any] | None:
    """The template filled in for one listed user; None (and a warning) when it cannot be."""
    email = entry.email
    if email is not None:
        try:
            _check_email(email)
        except ValueError:
            log.warning("%s: user %r: %r is not an email address; ignored",
                        skip.where, entry.user, email)  # fmt: skip
            email = None
    values = {"user": entry.user} | ({"email": email} if email is not None else {})
    if email is None:
        rest = {k: v for k, v in template.items() if k != "email"}
        if "{email}" in repr(rest):
            skip(entry.user, "no email address, which the template needs")
            return None
        if "{email}" in str(template.get("email", "")):
            template = rest
    return {k: _expand(v, values) for k, v in template.items()}


def expand_source(
    source: AccountSource,
    where: str,
    base: Path | None = None,
    users: Sequence[str | Listed] | None = None,
) -> list[Account]:
    """One Account per username (``users``, else the source's file); problems raise ConfigError.

    A doveadm or ldap source needs ``users`` (read by the service). A user listed there that
    cannot be a username, or whose account does not validate (an odd name, a missing address
    the template needs), is skipped with a warning rather than failing the whole list; in a
    usernames_file both are errors naming the line or the template key.
    """
    return list(_expand_source(source, where, base, users))


def _expand_source(
    source: AccountSource,
    where: str,
    base: Path | None = None,
    users: Sequence[str | Listed] | None = None,
) -> Iterator[Account]:
    """``expand_source`` one account at a time (so a caller can keep them compact); the
    ConfigError of every problem comes after the last account."""
    from_server = users is not None
    if users is None:
        if source.usernames_file is None:
            return
        users = read_usernames(source, base, where)
    path = f"{where}.{source.kind}"
    if source.usernames_file is not None:
        file = source.usernames_file
        path = str(base / file if base is not None and not file.is_absolute() else file)
    template = _template(source)
    problems: list[tuple[str, str]] = []
    skip = _Skipped(where)
    for lineno, item in enumerate(users, 1):
        entry = Listed(item) if isinstance(item, str) else item
        user = entry.user
        if not usable_username(user):
            if from_server:
                skip(user, "not usable as a username")
                continue
            problems.append(
                (f"{where}.usernames_file", f"line {lineno}: invalid username {user!r}")
            )
            continue
        data = _fill(template, entry, skip)
        if data is None:
            continue
        try:
            account = Account.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if from_server:
                err = errors[0]
                loc = ".".join(str(p) for p in err["loc"])
                skip(user, f"{loc or 'template'}: {err['msg'].removeprefix('Value error, ')}")
                continue
            for err in errors:
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(
                    (
                        f"{where}.template.{loc}" if loc else f"{where}.template",
                        f"for user {user!r}: {err['msg'].removeprefix('Value error, ')}",
                    )
                )
            continue
        yield account
    skip.close()
    if problems:
        raise ConfigError(path, problems)


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return _PLACEHOLDER.search(value) is not None
    if isinstance(value, list):
        return any(_has_placeholder(v) for v in value)
    if isinstance(value, dict):
        return any(_has_placeholder(v) for v in value.values())
    return False


class AccountTable(Mapping[str, Account]):
    """The accounts by name, kept compact: an account of a source is stored as the values of
    the fields its template fills in per user (name, username, ...) beside one full Account
    of that source (its prototype); a lookup builds the Account, a shallow copy of the
    prototype with those values, equal to the one validated when the list was read.

    An account whose other fields or set keys differ from the prototype's (or an explicit
    account) is kept as it is. 100,000 accounts of one source take some 30 MB rather than
    some 250 MB of validated models.
    """

    def __init__(self) -> None:
        #: (source label, number of accounts) in the order the accounts were added
        self.spans: list[tuple[str, int]] = []
        self._rows: dict[str, Account | tuple[int, tuple[Any, ...]]] = {}
        #: per group (a source): its prototype (None until the first account) and the fields
        #: that vary per user
        self._groups: list[tuple[Account | None, tuple[str, ...]]] = []

    def group(self, varying: Iterable[str]) -> int:
        """A new group of accounts that differ only in the fields ``varying``."""
        self._groups.append((None, tuple(varying)))
        return len(self._groups) - 1

    def add(self, account: Account, group: int | None = None) -> bool:
        """Add ``account`` (of ``group``, compactly if it can be); False if its name is taken."""
        name = account.name
        if name in self._rows:
            return False
        if group is None:
            self._rows[name] = account
            return True
        proto, varying = self._groups[group]
        if proto is None:
            self._groups[group] = (account, varying)
            proto = account
        mine, theirs = account.__dict__, proto.__dict__
        if (
            type(account) is type(proto)
            and account.__pydantic_fields_set__ == proto.__pydantic_fields_set__
            and mine.keys() == theirs.keys()
            and all(mine[k] == v for k, v in theirs.items() if k not in varying)
        ):
            self._rows[name] = (group, tuple(mine[k] for k in varying))
        else:
            self._rows[name] = account
        return True

    def __getitem__(self, name: str) -> Account:
        row = self._rows[name]
        return row if not isinstance(row, tuple) else self._build(row)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def doveadm_users(self) -> Counter[str]:
        """How many accounts read their quota from each doveadm (``quota_source: doveadm``), by
        its settings as JSON (:func:`doveadm_key`); the compact rows of a group whose template
        fills in neither setting count as its prototype, without being built."""
        counts: Counter[str] = Counter()
        per_group: Counter[int] = Counter()
        same = [not _DOVEADM_FIELDS & set(varying) for _proto, varying in self._groups]
        for row in self._rows.values():
            if isinstance(row, tuple) and same[row[0]]:
                per_group[row[0]] += 1
            elif key := doveadm_key(row if isinstance(row, Account) else self._build(row)):
                counts[key] += 1
        for group, n in per_group.items():
            proto = self._groups[group][0]
            if proto is not None and (key := doveadm_key(proto)):
                counts[key] += n
        return counts

    def _build(self, row: tuple[int, tuple[Any, ...]]) -> Account:
        proto, varying = self._groups[row[0]]
        assert proto is not None
        return proto.model_copy(update=dict(zip(varying, row[1], strict=True)))

    def grouped(self) -> list[tuple[str, list[Account]]]:
        """The accounts by source label (``spans``), each built."""
        accounts = iter(self.values())
        return [(label, list(islice(accounts, count))) for label, count in self.spans]

    def same(self, name: str, other: Mapping[str, Account]) -> bool:
        """Whether account ``name`` (in both) has the same settings in ``other``; compact rows of
        equal prototypes are compared without building the accounts."""
        mine = self._rows[name]
        if isinstance(other, AccountTable) and isinstance(mine, tuple):
            theirs = other._rows[name]
            if isinstance(theirs, tuple):
                if mine[1] != theirs[1]:
                    return False
                a, b = self._groups[mine[0]], other._groups[theirs[0]]
                if a is b or a == b:
                    return True
        return self[name] == other[name]


def doveadm_users(accounts: Mapping[str, Account]) -> Counter[str]:
    """How many accounts read their quota from each doveadm, by :func:`doveadm_key`."""
    if isinstance(accounts, AccountTable):
        return accounts.doveadm_users()
    return Counter(key for a in accounts.values() if (key := doveadm_key(a)))


def doveadm_key(account: Account) -> str | None:
    """The doveadm an account reads its quota from, as its settings' JSON (None: not doveadm)."""
    if account.quota_source != "doveadm" or account.doveadm is None:
        return None
    return account.doveadm.model_dump_json()


def config_base(config_path: str) -> Path | None:
    """The folder relative paths of the config are taken from."""
    return Path(config_path).resolve().parent if config_path != "<config>" else None


def grouped_accounts(
    config: Config,
    config_path: str = "<config>",
    users: Mapping[int, Sequence[str | Listed]] | None = None,
) -> list[tuple[str, list[Account]]]:
    """The accounts by source label: explicit ones (``EXPLICIT_SOURCE``) first, then every
    account source in order, with duplicate names refused.

    ``users`` gives the users of sources by index (the doveadm and ldap sources, read by the
    service, or a kept list); such a source without an entry contributes no accounts.
    """
    return account_table(config, config_path, users).grouped()


def account_table(
    config: Config,
    config_path: str = "<config>",
    users: Mapping[int, Sequence[str | Listed]] | None = None,
) -> AccountTable:
    """``grouped_accounts`` as a compact ``AccountTable`` (what the daemon keeps), its
    ``spans`` giving each source label's number of accounts in order."""
    table = AccountTable()
    problems: list[tuple[str, str]] = []
    base = config_base(config_path)

    def add(acct: Account, group: int | None = None) -> int:
        if table.add(acct, group):
            return 1
        problems.append(("account_sources", f"account name {acct.name!r} appears twice"))
        return 0

    table.spans.append((EXPLICIT_SOURCE, sum(add(acct) for acct in config.accounts)))
    for i, source in enumerate(config.account_sources):
        template = _template(source)
        group = table.group(k for k, v in template.items() if _has_placeholder(v))
        count = 0
        try:
            for acct in _expand_source(source, f"account_sources[{i}]", base, (users or {}).get(i)):
                count += add(acct, group)
        except ConfigError as exc:
            problems += exc.problems
        table.spans.append((source.label(i), count))
    if problems:
        raise ConfigError(config_path, problems)
    return table


def all_accounts(
    config: Config,
    config_path: str = "<config>",
    users: Mapping[int, Sequence[str | Listed]] | None = None,
) -> list[Account]:
    """Explicit accounts first, then every account source, with duplicate names refused
    (``grouped_accounts`` without the grouping)."""
    return list(account_table(config, config_path, users).values())


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
