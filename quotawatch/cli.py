"""The ``quotawatch`` command line: check, plan, cleanup, run, warn, config check."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from quotawatch import __version__
from quotawatch.config import Config, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts, password_problems, select_accounts
from quotawatch.errors import ConfigError
from quotawatch.logs import setup_logging
from quotawatch.model import AccountReport

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _add_common(
    p: argparse.ArgumentParser, *, accounts: bool = True, json_out: bool = True
) -> None:
    p.add_argument(
        "--config",
        "-c",
        default="/etc/quotawatch/quotawatch.yaml",
        help="config file (default: %(default)s)",
    )
    if accounts:
        p.add_argument(
            "--account",
            "-a",
            action="append",
            metavar="NAME",
            help="only this account (repeatable)",
        )
    if json_out:
        p.add_argument("--json", action="store_true", help="print JSON for scripts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quotawatch",
        description="Watch mailbox quotas, warn users in time, free space by rules.",
    )
    parser.add_argument("--version", action="version", version=f"quotawatch {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="default: info for run, warning otherwise",
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="show each account's quota and folders, largest first")
    _add_common(p)
    p.add_argument(
        "--folders",
        type=int,
        default=None,
        metavar="N",
        help="show only the N largest folders per account",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("plan", help="show what the retention rules would remove (changes nothing)")
    _add_common(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("cleanup", help="apply the retention rules (dry run without --apply)")
    _add_common(p)
    p.add_argument("--apply", action="store_true", help="really delete, move or archive")
    p.add_argument(
        "--progress", action="store_true", help="print progress to stderr (default: when a tty)"
    )
    p.set_defaults(func=cmd_cleanup)

    p = sub.add_parser("run", help="run the daemon: scheduled checks, cleanups, metrics, warnings")
    _add_common(p, accounts=False, json_out=False)
    p.add_argument("--once", action="store_true", help="run every account's job once and exit")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("warn", help="quota warning mails")
    _add_common(p, json_out=False)
    p.add_argument("--preview", action="store_true", help="print the mail instead of sending it")
    p.set_defaults(func=cmd_warn)

    p = sub.add_parser("config", help="config file tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    pc = csub.add_parser("check", help="validate a config file and report every problem")
    pc.add_argument("file", nargs="?", help="config file (or --config)")
    pc.add_argument("--config", "-c", default="/etc/quotawatch/quotawatch.yaml")
    pc.set_defaults(func=cmd_config_check)
    return parser


def load(args: argparse.Namespace) -> tuple[Config, list[Any]]:
    """Config and the selected accounts, or ConfigError."""
    config = load_config(args.config)
    accounts = all_accounts(config, args.config)
    return config, select_accounts(accounts, getattr(args, "account", None))


def cmd_config_check(args: argparse.Namespace) -> int:
    path = args.file or args.config
    config = load_config(path)
    accounts = all_accounts(config, path)
    problems = password_problems(accounts, SecretCache())
    if problems:
        raise ConfigError(path, problems)
    print(f"{path}: OK ({len(accounts)} accounts, {len(config.rules)} rules)")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from quotawatch.output import render_check
    from quotawatch.service.jobs import check_accounts

    config, accounts = load(args)
    reports: list[AccountReport] = list(
        check_accounts(accounts, SecretCache(), concurrency=config.schedule.concurrency)
    )
    if args.json:
        print(
            json.dumps({"accounts": [r.to_json() for r in reports]}, indent=2, ensure_ascii=False)
        )
    else:
        print(render_check(reports, args.folders))
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


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
    state = State(config.state_dir)
    audit = AuditLog(config.state_dir / "audit.jsonl")
    show = apply and (getattr(args, "progress", False) or sys.stderr.isatty())

    def runs_with(wrap: Any) -> list[tuple[Any, Any]]:
        return list(
            cleanup_accounts(
                accounts, config, state, audit, SecretCache(), apply=apply,
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
    return EXIT_FAILED if failed else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon (until SIGTERM), or with --once every account's job once: 0 if all succeeded."""
    from quotawatch.service.process import serve

    return serve(args.config, once=args.once)


def cmd_warn(args: argparse.Namespace) -> int:
    """--preview: print the mail each account would get; else decide and send now."""
    from datetime import UTC, datetime

    from quotawatch.service.warn import preview_account, warn_now
    from quotawatch.state import State

    config, accounts = load(args)
    if config.warnings is None or config.smtp is None:
        raise ConfigError(
            args.config, [("warnings", "no warnings: (and smtp:) section configured")]
        )
    state, secrets, now = State(config.state_dir), SecretCache(), datetime.now(UTC)
    try:
        if args.preview:
            texts = [preview_account(a, config, state, secrets, now) for a in accounts]
            print("\n\n".join(text for text, _ in texts))
            return EXIT_OK if all(ok for _, ok in texts) else EXIT_FAILED
        outcomes = warn_now(accounts, config, state, secrets, now)
    finally:
        state.close()
    for name, o in outcomes:
        what = f" {o.kind} {o.threshold}" if o.kind else ""
        print(f"{name}: {o.result}{what}{': ' + o.detail if o.detail else ''}")
    return EXIT_FAILED if any(o.result == "failed" for _, o in outcomes) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    default_level = "info" if args.command == "run" else "warning"
    setup_logging(args.log_level or default_level, args.log_format)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
