"""The command-line grammar: every command with its options, description, exit codes and example."""

from __future__ import annotations

import argparse
from textwrap import dedent, fill

from quotawatch import __version__

DEFAULT_CONFIG = "/etc/quotawatch/quotawatch.yaml"

EXIT_CODES = """\
exit status:
  0  every account fine
  1  at least one account failed, a plan hit a safety cap or an account source could not
     be read (the others are still reported)
  2  config or usage error, also a password file or ca_file that cannot be used"""

URL_FORMS = """\
mailbox URLs (instead of --config, for one mailbox):
  imaps://USER@HOST[:PORT]   IMAP with implicit TLS (993)
  imap://USER@HOST[:PORT]    IMAP with STARTTLS (143), refused if the server does not offer it
  pop3s://USER@HOST[:PORT]   POP3 with implicit TLS (995)
  pop3://USER@HOST[:PORT]    POP3 with STLS (110)
  A login containing @ is written %40 (imaps://me%40example.org@mail.example.org).
  Plaintext is not available from a URL; there is no place for the password in it."""

#: per command: (one-line help, one-paragraph description, epilog after the options)
TEXTS: dict[str, tuple[str, str, str]] = {
    "check": (
        "show each account's quota and folders, largest first",
        """Log in to each account, read its quota (GETQUOTAROOT; for POP3 the configured quota)
        and the size of every folder, and print a summary table, then each account's folders
        largest first. Nothing is changed or stored. Instead of --config, name one mailbox as a
        URL: the password is asked for on the terminal, or read from --password-file.""",
        f"""{URL_FORMS}

{EXIT_CODES}

examples:
  quotawatch check --config /etc/quotawatch/quotawatch.yaml --account alice
  quotawatch check imaps://me@mail.example.org""",
    ),
    "plan": (
        "show what the retention rules would remove (changes nothing)",
        """Log in to each account, ask the server for the messages each retention rule may take,
        and print per rule and folder how many messages and bytes would go and the quota usage
        after. A rule that selects nothing says why in one note line. No mail is changed; the
        report, usage history and first-seen records are stored in state_dir.""",
        f"""{EXIT_CODES}

example:
  quotawatch plan --config /etc/quotawatch/quotawatch.yaml --account alice""",
    ),
    "cleanup": (
        "apply the retention rules (dry run without --apply)",
        """Plan as `plan` does, then with --apply carry out exactly that plan: only the planned
        UIDs, after a UIDVALIDITY check, with UID EXPUNGE (POP3: DELE, applied at QUIT), each
        removal appended to state_dir/audit.jsonl. Without --apply it is `plan`.""",
        f"""{EXIT_CODES}

example:
  quotawatch cleanup --config /etc/quotawatch/quotawatch.yaml --account alice --apply""",
    ),
    "run": (
        "run the daemon: scheduled checks, cleanups, metrics, warnings",
        """Run until SIGTERM: check every account each schedule.interval, plan and (with
        schedule.cleanup) clean, send warning mails, and serve /metrics and /healthz. SIGHUP
        re-reads the config. With --once, run every account's job once and exit.""",
        f"""{EXIT_CODES}

example:
  quotawatch run --config /etc/quotawatch/quotawatch.yaml --once""",
    ),
    "warn": (
        "send (or preview) the quota warning mail",
        """Check each account and decide, as the daemon does, whether a warning, reminder or
        all-clear mail is due; send it now. With --preview nothing is sent: print the mail if
        one is due, else one line saying why none is; --force prints the mail anyway.""",
        f"""preview without a mail due, for example:
  alice: no warning due (79.9 %, below 80 %) (from the live check)

{EXIT_CODES}

examples:
  quotawatch warn --config /etc/quotawatch/quotawatch.yaml --account alice --preview
  quotawatch warn --config /etc/quotawatch/quotawatch.yaml --account alice""",
    ),
    "auth": (
        "OAuth2 sign-in of auth: oauth2 accounts: login, status",
        """Sign a person's mailbox in with OAuth2 (the device-code flow) and show the token state
        of every auth: oauth2 account.""",
        f"""{EXIT_CODES}

example:
  quotawatch auth status --config /etc/quotawatch/quotawatch.yaml""",
    ),
    "auth login": (
        "sign a delegated account in (device code) and store its refresh token",
        """For one account with auth: oauth2 and oauth2.flow: delegated: print the sign-in page
        and the code to enter there (on stderr), wait until you have signed in, and store the
        refresh token in state_dir/oauth2-tokens/ (mode 0600). No token is ever printed.""",
        """exit status:
  0  signed in
  1  the sign-in was refused or expired
  2  config or usage error

example:
  quotawatch auth login --config /etc/quotawatch/quotawatch.yaml --account me""",
    ),
    "auth status": (
        "each OAuth2 account's token state and expiry",
        """For every auth: oauth2 account: when its cached access token expires, whether a
        refresh token is stored and when it lapses if unused, and what to run if a sign-in is
        missing. Reads the token cache only; contacts no server.""",
        """exit status:
  0  every account can get a token
  1  at least one account needs quotawatch auth login
  2  config or usage error

example:
  quotawatch auth status --config /etc/quotawatch/quotawatch.yaml --json""",
    ),
    "config": (
        "config file tools: check, init",
        """Check a config file without a server (every problem at once), or write a commented
        starter config for one mailbox.""",
        """exit status:
  0  fine
  2  a problem with the config file, or a usage error

example:
  quotawatch config check /etc/quotawatch/quotawatch.yaml""",
    ),
    "config check": (
        "validate a config file and report every problem",
        """Validate a config file without contacting any server and print every problem at once,
        one line each as FILE: dotted.path: message: the schema, rules across fields, and what
        can be known locally: each password source can be read (files mode 0600), each ca_file
        holds a PEM CA certificate, state_dir can be created and written, the metrics password
        file is private, each usernames_file can be read.""",
        """exit status:
  0  the config is fine
  2  at least one problem (each printed on stderr)

example:
  quotawatch config check /etc/quotawatch/quotawatch.yaml""",
    ),
    "config init": (
        "write a commented starter config",
        """Write a commented starter config for one mailbox: the account (from URL, else a
        placeholder to edit), the two usual rules trash-30d and junk-14d, warnings off and
        scheduled cleanup off. The file gets mode 0600 and an existing file is never
        overwritten. Without --password-file the account refers to NAME.password next to the
        config, for you to create.""",
        f"""{URL_FORMS}

exit status:
  0  written
  2  the file exists, or a usage error

example:
  quotawatch config init imaps://me@mail.example.org --password-file ~/.config/quotawatch/pw""",
    ),
}


def _text(paragraph: str) -> str:
    return fill(" ".join(dedent(paragraph).split()), width=79)


def _sub(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    short, description, epilog = TEXTS[name]
    return sub.add_parser(
        name.split()[-1],
        help=short,
        description=_text(description),
        epilog=epilog,
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--log-level and --log-format; accepted before and after the command name (after it, an
    option without a default leaves the value given before it alone)."""
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None if defaults else argparse.SUPPRESS,
        help="log verbosity on stderr (default: info for run, warning otherwise)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text" if defaults else argparse.SUPPRESS,
        help="text lines, or one JSON object per line for log shippers (default: text)",
    )


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="FILE",
        help=f"config file (default: {DEFAULT_CONFIG})",
    )


def _accounts_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--account",
        "-a",
        action="append",
        metavar="NAME",
        help="only this account (repeatable; default: every account)",
    )


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def build_parser() -> argparse.ArgumentParser:
    """The whole grammar; ``args.command`` (and ``args.config_command``) name what to run."""
    parser = argparse.ArgumentParser(
        prog="quotawatch",
        description=(
            "Watch IMAP and POP3 mailbox quotas, warn users before their mailbox fills, and "
            "free space by retention rules (plan first, then a safe cleanup)."
        ),
        epilog=f"{EXIT_CODES}\n\nRun quotawatch COMMAND --help for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"quotawatch {__version__}")
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(sub, "check", [common])
    p.add_argument("url", nargs="?", metavar="URL", help="one mailbox instead of --config")
    _config_option(p)
    _accounts_option(p)
    _json_option(p)
    p.add_argument(
        "--folders", type=int, default=None, metavar="N", help="show only the N largest folders"
    )
    p.add_argument(
        "--password-file",
        metavar="FILE",
        help="with URL: read the password from FILE (mode 0600) instead of asking",
    )
    p.add_argument(
        "--ca-file", metavar="FILE", help="with URL: PEM CAs to trust instead of the system store"
    )

    p = _sub(sub, "plan", [common])
    _config_option(p)
    _accounts_option(p)
    _json_option(p)

    p = _sub(sub, "cleanup", [common])
    _config_option(p)
    _accounts_option(p)
    _json_option(p)
    p.add_argument("--apply", action="store_true", help="really delete, move or archive")
    p.add_argument(
        "--progress", action="store_true", help="print progress to stderr (default: when a tty)"
    )

    p = _sub(sub, "run", [common])
    _config_option(p)
    p.add_argument("--once", action="store_true", help="run every account's job once and exit")

    p = _sub(sub, "warn", [common])
    _config_option(p)
    _accounts_option(p)
    p.add_argument("--preview", action="store_true", help="print the mail instead of sending it")
    p.add_argument(
        "--force", action="store_true", help="with --preview: print the mail even if none is due"
    )

    p = _sub(sub, "auth", [common])
    asub = p.add_subparsers(dest="auth_command", required=True, metavar="SUBCOMMAND")
    pa = _sub(asub, "auth login", [common])
    _config_option(pa)
    _accounts_option(pa)
    pa = _sub(asub, "auth status", [common])
    _config_option(pa)
    _accounts_option(pa)
    _json_option(pa)

    p = _sub(sub, "config", [common])
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    pc = _sub(csub, "config check", [common])
    pc.add_argument("file", nargs="?", metavar="FILE", help="config file (or --config)")
    _config_option(pc)
    pi = _sub(csub, "config init", [common])
    pi.add_argument("url", nargs="?", metavar="URL", help="the mailbox (default: a placeholder)")
    pi.add_argument(
        "--output",
        "-o",
        default="quotawatch.yaml",
        metavar="FILE",
        help="where to write (default: ./quotawatch.yaml)",
    )
    pi.add_argument(
        "--password-file", metavar="FILE", help="the account's password file (mode 0600)"
    )
    pi.add_argument(
        "--ca-file", metavar="FILE", help="PEM CAs to trust instead of the system store"
    )
    return parser
