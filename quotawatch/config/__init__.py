"""Stage 1, config: the YAML file, read and checked before anything touches a server.

Takes a path (and, for account sources, their already-read user lists); gives a validated
``Config`` of frozen pydantic models (which double as the README's reference) or a
``ConfigError`` listing every problem at once as ``FILE: dotted.path: message``. ``account``
holds accounts, templates and sources, ``rules`` the retention rules, ``service`` schedule,
metrics, SMTP and warnings, ``secrets`` the password and key readers, ``files`` the offline
checks of paths (``config check``), ``profiles``/``oauth2`` provider defaults and sign-in.
Never imports mail, retention, warnings, service or state: it is the first stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from quotawatch.config.account import Account, AccountFields, AccountSource, AccountTemplate
from quotawatch.config.base import DEFAULT_PORTS, Email, Strict, TlsMode, check_tls_mode
from quotawatch.config.oauth2 import OAuth2
from quotawatch.config.profiles import GMAIL_DOWNLOAD_LIMIT
from quotawatch.config.rules import Rule, pop3_rule_problems
from quotawatch.config.service import AdminDigest, Metrics, Schedule, Smtp, Threshold, Warnings
from quotawatch.errors import ConfigError
from quotawatch.model import SPECIAL_USE_FLAGS

__all__ = [
    "DEFAULT_PORTS",
    "SPECIAL_USE_FLAGS",
    "Account",
    "AccountFields",
    "AccountSource",
    "AccountTemplate",
    "AdminDigest",
    "Config",
    "Email",
    "Metrics",
    "OAuth2",
    "Rule",
    "Schedule",
    "Smtp",
    "Strict",
    "Threshold",
    "TlsMode",
    "Warnings",
    "check_tls_mode",
    "config_warnings",
    "load_config",
    "parse_config",
    "pop3_rule_problems",
]


class Config(Strict):
    """The whole quotawatch config file."""

    state_dir: Path = Field(
        Path("./state"),
        description="SQLite state and the audit log live here.",
        examples=["/var/lib/quotawatch"],
    )
    accounts: list[Account] = Field(default_factory=list, description="Mailboxes to watch.")
    account_sources: list[AccountSource] = Field(
        default_factory=list, description="Many mailboxes from a username list."
    )
    rules: dict[str, Rule] = Field(default_factory=dict, description="Retention rules by name.")
    schedule: Schedule = Schedule()
    metrics: Metrics = Metrics()
    smtp: Smtp | None = None
    warnings: Warnings | None = None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-plain") or "[" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _owners(data: Config) -> list[tuple[str, AccountFields]]:
    """Every account and template with its config path (``accounts[0]``, ``...template``)."""
    owners: list[tuple[str, AccountFields]] = [
        (f"accounts[{i}]", a) for i, a in enumerate(data.accounts)
    ]
    return owners + [
        (f"account_sources[{i}].template", s.template) for i, s in enumerate(data.account_sources)
    ]


def config_warnings(data: Config) -> list[tuple[str, str]]:
    """What is allowed but deserves a word (``config check`` prints it): archive rules on
    ``provider: gmail``, which download bodies against Gmail's daily IMAP download limit."""
    warnings = []
    for where, owner in _owners(data):
        if owner.provider != "gmail" or owner.protocol != "imap":
            continue
        for j, name in enumerate(owner.rules):
            rule = data.rules.get(name)
            if rule is not None and rule.action == "archive":
                warnings.append((
                    f"{where}.rules[{j}]",
                    f"rule {name} archives (downloads every message it takes) from a provider: "
                    f"gmail account; {GMAIL_DOWNLOAD_LIMIT} and refuses more for up to a day; "
                    "keep the rule small (larger_than, older_than); plan shows what a run archives",
                ))  # fmt: skip
    return warnings


def _cross_checks(data: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, acct in enumerate(data.accounts):
        if acct.name in seen:
            problems.append(
                (
                    f"accounts[{i}].name",
                    f"duplicate account name {acct.name!r} (also accounts[{seen[acct.name]}])",
                )
            )
        seen.setdefault(acct.name, i)
    for where, owner in _owners(data):
        for j, rule_name in enumerate(owner.rules):
            rule = data.rules.get(rule_name)
            if rule is None:
                known = ", ".join(sorted(data.rules)) or "none defined"
                problems.append(
                    (f"{where}.rules[{j}]", f"unknown rule {rule_name!r} (known: {known})")
                )
                continue
            if owner.protocol == "pop3":
                problems += [
                    (f"rules.{rule_name}.{field}", f"{msg} (rule used by POP3 account at {where})")
                    for field, msg in pop3_rule_problems(rule)
                ]
        if (
            owner.protocol == "pop3"
            and owner.quota is None
            and not (owner.quota_from_imap or owner.quota_from_graph)
        ):
            problems.append(
                (f"{where}.quota", "a POP3 account needs quota: SIZE or quota_from_imap: true")
            )
    if data.warnings is not None and data.smtp is None:
        problems.append(("smtp", "warnings are configured but smtp is not"))
    return problems


def parse_config(data: Any, path: str = "<config>") -> Config:
    """Validate already-parsed YAML data; raise ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [("", "the top level must be a mapping")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            msg = err["msg"].removeprefix("Value error, ")
            problems.append((_loc(err["loc"]), msg))
        raise ConfigError(path, problems) from None
    problems = _cross_checks(config)
    if problems:
        raise ConfigError(path, problems)
    return config


#: libyaml's scanner and parser where PyYAML was built with it (its wheels are): a 20-account
#: file loads in 5 ms instead of 65; the constructors (below) are the same Python code
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; relative paths in it are taken from the file's folder."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, [("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(name, [("", f"{where}invalid YAML: {problem}")]) from None
    base = Path(path).resolve().parent
    config = parse_config(_absolute(data, base), name)
    if not config.state_dir.is_absolute():
        config = config.model_copy(update={"state_dir": base / config.state_dir})
    return config


#: keys holding a file or folder name, wherever they appear
PATH_KEYS = frozenset(
    {"state_dir", "password_file", "ca_file", "client_state_file", "usernames_file",
     "tls_cert_file", "tls_key_file", "basic_auth_password_file", "archive_dir",
     "bind_password_file"}
)  # fmt: skip


def _absolute(data: Any, base: Path) -> Any:
    """``data`` with ``~`` expanded and relative paths taken from the config file's folder."""
    if isinstance(data, list):
        return [_absolute(v, base) for v in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if key in PATH_KEYS and isinstance(value, str) and value.strip():
            path = Path(value).expanduser()
            out[key] = str(path if path.is_absolute() else base / path)
        else:
            out[key] = _absolute(value, base)
    return out
