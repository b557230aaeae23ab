"""The ``quotawatch`` command line: check, plan, cleanup, run, warn, config check."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quotawatch.config import Config, config_warnings, load_config
from quotawatch.config.files import account_secret_problems, file_problems, state_dir_problems
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts, select_accounts
from quotawatch.errors import ConfigError, QuotawatchError
from quotawatch.extras import MissingExtra
from quotawatch.logs import setup_logging
from quotawatch.mail.oauth2.tokens import TokenBroker, secret_cache
from quotawatch.model import AccountReport
from quotawatch.parser import DEFAULT_CONFIG, build_parser

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def config_path(args: argparse.Namespace) -> str:
    return getattr(args, "config", None) or DEFAULT_CONFIG


def load(args: argparse.Namespace) -> tuple[Config, list[Any]]:
    """Config and the selected accounts (account sources read now), or ConfigError."""
    from quotawatch.service.directory import Directory

    path = config_path(args)
    config = load_config(path)
    directory = Directory()
    accounts = directory.accounts(config, path, SecretCache(), force=True)
    # a source that could not be read (already logged) makes the command fail (exit 1), also
    # when every account it did list was fine: its users were not looked at
    args.sources_failed = [s.label for s in directory.statuses() if not s.ok]
    return config, select_accounts(accounts, getattr(args, "account", None))


def _with_sources(args: argparse.Namespace, code: int) -> int:
    """``code``, or EXIT_FAILED where it says all went well but an account source failed."""
    if code == EXIT_OK and getattr(args, "sources_failed", None):
        print(f"quotawatch: account source(s) not read: {', '.join(args.sources_failed)}; "
              "their accounts were not checked", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return code


def need_state_dir(config: Config, path: str) -> None:
    """A state_dir that cannot be created or written is a config error before any login."""
    problems = state_dir_problems(config.state_dir)
    if problems:
        raise ConfigError(path, problems)


def cmd_config_check(args: argparse.Namespace) -> int:
    """Every problem knowable without a server, at once (doveadm and ldap sources are not read)."""
    from quotawatch.service.directory import doveadm_key_problems, ldap_problems

    path = args.file or config_path(args)
    config = load_config(path)
    problems: list[tuple[str, str]] = []
    try:
        accounts = all_accounts(config, path)
    except ConfigError as exc:
        problems += exc.problems
        accounts = list(config.accounts)
    secrets = SecretCache()
    problems += account_secret_problems(config, accounts, secrets)
    problems += doveadm_key_problems(config, secrets)
    problems += ldap_problems(config, secrets)
    problems += file_problems(config)
    for loc, msg in config_warnings(config):  # allowed: said on stderr, before any error
        print(f"{path}: {loc}: warning: {msg}", file=sys.stderr)
    if problems:
        raise ConfigError(path, problems)
    print(f"{path}: OK ({len(accounts)} accounts, {len(config.rules)} rules)")
    return EXIT_OK


def cmd_config_init(args: argparse.Namespace) -> int:
    """Write the starter config; never overwrite."""
    from quotawatch.config.starter import PLACEHOLDER, starter_config, write_new
    from quotawatch.config.url import parse_mailbox_url

    try:
        fields = parse_mailbox_url(args.url) if args.url else dict(PLACEHOLDER)
    except ValueError as exc:
        raise ConfigError("URL", [("", str(exc))]) from None
    out = Path(args.output).expanduser().absolute()
    if args.password_file:
        password_file = str(Path(args.password_file).expanduser().absolute())
    else:
        password_file = re.sub(r"[^A-Za-z0-9_.@+-]", "_", fields["name"]) + ".password"
    ca_file = str(Path(args.ca_file).expanduser().absolute()) if args.ca_file else None
    try:
        write_new(out, starter_config(fields, password_file, ca_file, out))
    except FileExistsError:
        raise ConfigError(str(out), [("", "exists; not overwritten (use --output FILE)")]) from None
    except OSError as exc:
        raise ConfigError(str(out), [("", f"cannot write: {exc.strerror or exc}")]) from None
    print(f"wrote {out} (mode 0600)")
    if not args.password_file:
        secret = out.parent / password_file
        print(f"next: put the password into {secret}: install -m 600 /dev/stdin {secret}")
    print(f"then: quotawatch config check {out}")
    return EXIT_OK


def _url_account(args: argparse.Namespace) -> tuple[Any, SecretCache]:
    """The account of ``check URL`` and the secrets to log in with (prompted on a terminal)."""
    from pydantic import ValidationError

    from quotawatch.config.url import PROMPTED, url_account

    try:
        account = url_account(args.url, args.password_file, args.ca_file)
    except ValidationError as exc:
        msgs = [e["msg"].removeprefix("Value error, ") for e in exc.errors(include_url=False)]
        raise ConfigError(args.url, [("", m) for m in msgs]) from None
    except ValueError as exc:
        raise ConfigError("URL", [("", str(exc))]) from None
    if args.password_file:
        return account, SecretCache()
    if not sys.stdin.isatty():
        raise ConfigError(
            args.url, [("", "no password: run in a terminal to be asked, or give --password-file")]
        )
    password = getpass.getpass(f"Password for {account.username} at {account.host}: ")
    if not password:
        raise ConfigError(args.url, [("", "no password given")])
    return account, SecretCache(environ={PROMPTED: password})


def _broker(config: Config, path: str) -> TokenBroker:
    tokens = secret_cache(config, path).tokens
    assert isinstance(tokens, TokenBroker)
    return tokens


def cmd_auth_login(args: argparse.Namespace) -> int:
    """Device-code sign-in of one delegated account; the instructions go to stderr."""
    from quotawatch.mail.oauth2.signin import login

    config, accounts = load(args)
    if len(args.account or []) != 1:
        raise ConfigError("--account", [("", "auth login signs in one account: --account NAME")])
    broker = _broker(config, config_path(args))
    try:
        login(accounts[0], broker, lambda line: print(line, file=sys.stderr, flush=True))
    except QuotawatchError as exc:
        print(f"quotawatch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    where = broker.store.path if broker.store is not None else "memory"
    print(f"{accounts[0].name}: signed in; refresh token stored in {where}/ (mode 0600)")
    return EXIT_OK


def cmd_auth_status(args: argparse.Namespace) -> int:
    """Token state of every auth: oauth2 account (from the cache; contacts no server)."""
    import time

    from quotawatch.mail.oauth2.signin import status

    config, accounts = load(args)
    rows = status(accounts, _broker(config, config_path(args)))
    if args.json:
        print(json.dumps({"accounts": [r.to_json() for r in rows]}, indent=2))
    else:
        now = time.time()
        print("\n".join(r.line(now) for r in rows) or "no account uses auth: oauth2")
    return EXIT_FAILED if any(r.action for r in rows) else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from quotawatch.output import render_check
    from quotawatch.service.fleet import check_accounts

    if args.url:
        if args.config or args.account:
            raise ConfigError("check", [("", "give either a URL or --config/--account, not both")])
        account, secrets = _url_account(args)
        accounts, concurrency = [account], 1
    else:
        if args.password_file or args.ca_file:
            raise ConfigError("check", [("", "--password-file and --ca-file go with a URL")])
        config, accounts = load(args)
        secrets = secret_cache(config, config_path(args))
        concurrency = config.schedule.concurrency
    reports: list[AccountReport] = list(check_accounts(accounts, secrets, concurrency=concurrency))
    if args.json:
        print(
            json.dumps({"accounts": [r.to_json() for r in reports]}, indent=2, ensure_ascii=False)
        )
    else:
        print(render_check(reports, args.folders))
    if any(r.reason == "config" for r in reports):
        return EXIT_CONFIG  # a password file or ca_file that cannot be used
    return _with_sources(args, EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED)


def cmd_plan(args: argparse.Namespace) -> int:
    return _retention(args, apply=False)


def cmd_cleanup(args: argparse.Namespace) -> int:
    return _retention(args, apply=args.apply)


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _retention(args: argparse.Namespace, *, apply: bool) -> int:
    """plan / cleanup: one login per account for snapshot, plan and (with apply) execution."""
    from datetime import UTC, datetime

    from quotawatch.mail.connect import open_session
    from quotawatch.output import render_plans
    from quotawatch.retention.audit import AuditLog
    from quotawatch.service.interrupt import run_stoppable
    from quotawatch.service.jobs import cleanup_accounts
    from quotawatch.state import State

    config, accounts = load(args)
    need_state_dir(config, config_path(args))
    state = State(config.state_dir)
    audit = AuditLog(config.state_dir / "audit.jsonl")
    show = apply and (getattr(args, "progress", False) or sys.stderr.isatty())

    def runs_with(wrap: Any) -> list[tuple[Any, Any]]:
        return list(
            cleanup_accounts(
                accounts, config, state, audit, secret_cache(config, config_path(args)), apply=apply,
                now=datetime.now(UTC), progress=_print_progress if show else None,
                factory=wrap(open_session),
            )
        )  # fmt: skip

    try:  # with --apply, SIGINT/SIGTERM stop between commands, as in the daemon
        if apply:
            stopped = run_stoppable(runs_with)
            runs = stopped.value or []
        else:
            stopped, runs = None, runs_with(lambda factory: factory)
    finally:
        state.close()
    if args.json:
        out = []
        for plan, result in runs:
            entry = plan.to_json()
            entry["applied"] = result is not None
            entry["cleanup"] = result.to_json() if result is not None else None
            out.append(entry)
        print(json.dumps({"accounts": out}, indent=2, ensure_ascii=False))
    else:
        print(render_plans(runs, applied=apply))
    failed = any(not p.ok or (r is not None and not r.ok) for p, r in runs)
    if stopped is not None and stopped.exit_code is not None:
        assert stopped.signal is not None
        print(f"stopped by {stopped.signal.name}: the rest of the plan was not carried out "
              "(see above); the next cleanup continues", file=sys.stderr)  # fmt: skip
        return stopped.exit_code
    return _with_sources(args, EXIT_FAILED if failed else EXIT_OK)


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon (until SIGTERM), or with --once every account's job once: 0 if all succeeded."""
    from quotawatch.service.process import serve

    path = config_path(args)
    need_state_dir(load_config(path), path)
    return serve(path, once=args.once)


def cmd_warn(args: argparse.Namespace) -> int:
    """--preview: print the mail each account would get (or why none is due); else send now."""
    from datetime import UTC, datetime

    from quotawatch.service.warn import preview_account, warn_now
    from quotawatch.state import State

    config, accounts = load(args)
    if config.warnings is None or config.smtp is None:
        raise ConfigError(
            config_path(args), [("warnings", "no warnings: (and smtp:) section configured")]
        )
    if args.force and not args.preview:
        raise ConfigError("warn", [("", "--force goes with --preview")])
    need_state_dir(config, config_path(args))
    state, now = State(config.state_dir), datetime.now(UTC)
    secrets = secret_cache(config, config_path(args))
    try:
        if args.preview:
            texts = [
                preview_account(a, config, state, secrets, now, force=args.force) for a in accounts
            ]
            print("\n\n".join(text for text, _ in texts))
            return EXIT_OK if all(ok for _, ok in texts) else EXIT_FAILED
        outcomes = warn_now(accounts, config, state, secrets, now)
    finally:
        state.close()
    for name, o in outcomes:
        what = f" {o.kind} {o.threshold}" if o.kind else ""
        print(f"{name}: {o.result}{what}{': ' + o.detail if o.detail else ''}")
    return EXIT_FAILED if any(o.result == "failed" for _, o in outcomes) else EXIT_OK


COMMANDS = {
    "check": cmd_check,
    "plan": cmd_plan,
    "cleanup": cmd_cleanup,
    "run": cmd_run,
    "warn": cmd_warn,
    "auth login": cmd_auth_login,
    "auth status": cmd_auth_status,
    "config check": cmd_config_check,
    "config init": cmd_config_init,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.command + (f" {args.config_command}" if args.command == "config" else "")
    name += f" {args.auth_command}" if args.command == "auth" else ""
    default_level = "info" if args.command == "run" else "warning"
    setup_logging(args.log_level or default_level, args.log_format)
    try:
        return COMMANDS[name](args)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
