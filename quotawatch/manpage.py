"""The man page quotawatch(1), generated from the same argparse parser as ``--help``.

``python -m quotawatch.manpage > man/quotawatch.1`` regenerates it; a test checks it is current.
"""

from __future__ import annotations

import argparse
import sys

from quotawatch.parser import TEXTS, build_parser


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or apostrophe."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        ("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
        if action.nargs == 0:
            return names
        meta = action.metavar or (
            "{" + ",".join(action.choices) + "}" if action.choices else action.dest.upper()
        )
        return f"{names} \\fI{_roff(str(meta))}\\fR"
    return f"\\fI{_roff(str(action.metavar or action.dest))}\\fR"


def _options(parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if action.dest in skip or action.help in (None, argparse.SUPPRESS):
            continue
        out += [".TP", _option(action), _roff(str(action.help))]
    return out


def _epilog(epilog: str) -> list[str]:
    """Epilog paragraphs: a heading line, then indented lines shown as they are."""
    out: list[str] = []
    for block in epilog.strip().split("\n\n"):
        head, *rest = block.splitlines()
        out += [".PP", f"\\fB{_roff(head.rstrip(':'))}\\fR", ".nf", ".RS 4"]
        out += [_roff(line.strip()) for line in rest]
        out += [".RE", ".fi"]
    return out


def _command(name: str, parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    usage = " ".join(parser.format_usage().split()).removeprefix("usage: ")
    out = [".SS " + _roff(f"quotawatch {name}"), ".nf", _roff(usage), ".fi", ".PP"]
    out.append(_roff(" ".join(TEXTS[name][1].split())))
    out += _options(parser, skip)
    out += _epilog(TEXTS[name][2])
    return out


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole page in roff (man macros)."""
    parser = parser or build_parser()
    top = [
        '.TH QUOTAWATCH 1 "" "quotawatch" "User Commands"',
        ".SH NAME",
        "quotawatch \\- watch mailbox quotas, warn users, free space by rules",
        ".SH SYNOPSIS",
        "\\fBquotawatch\\fR [\\fIglobal options\\fR] \\fICOMMAND\\fR [\\fIoptions\\fR]",
        ".SH DESCRIPTION",
        _roff(str(parser.description)),
        ".SH GLOBAL OPTIONS",
        "Accepted before and after the command name.",
        *_options(parser, set()),
        ".SH COMMANDS",
    ]
    globals_ = {"log_level", "log_format"}
    for name, sub in _subparsers(parser).items():
        if name in ("config", "auth"):
            for cname, csub in _subparsers(sub).items():
                top += _command(f"{name} {cname}", csub, globals_)
        else:
            top += _command(name, sub, globals_)
    top += [
        ".SH FILES",
        ".TP",
        "\\fI/etc/quotawatch/quotawatch.yaml\\fR",
        "the default config file",
        ".TP",
        "\\fISTATE_DIR/state.sqlite3\\fR, \\fISTATE_DIR/audit.jsonl\\fR",
        "state database and audit log of every removal",
        ".TP",
        "\\fISTATE_DIR/oauth2\\-tokens/\\fR",
        "OAuth2 access and refresh tokens (directory mode 0700, files mode 0600)",
        ".SH SEE ALSO",
        "README.md of the quotawatch source, section Configuration reference.",
    ]
    return "\n".join(top) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
