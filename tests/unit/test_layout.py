"""The package layout tells the data flow; these import rules keep that picture true.

Every import counts, also one inside a function (a "lazy" import) and a dynamic one
(``importlib.import_module``, ``__import__``, ``extras.require``) with a literal name: a forbidden
edge is forbidden wherever it hides. A dynamic import of a name made at run time is refused
outside the extras loader, since no rule could see where it leads.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "quotawatch"

#: (importer prefix, imported prefix, why): a module under the first may not import the second
FORBIDDEN: tuple[tuple[str, str, str], ...] = (
    ("quotawatch.mail.session", "quotawatch.mail.imap", "the interface never knows its adapters"),
    ("quotawatch.mail.session", "quotawatch.mail.pop3", "the interface never knows its adapters"),
    ("quotawatch.mail.session", "quotawatch.mail.connect", "the factory lives apart"),
    ("quotawatch.config", "quotawatch.mail", "config is the first stage"),
    ("quotawatch.config", "quotawatch.retention", "config is the first stage"),
    ("quotawatch.config", "quotawatch.warnings", "config is the first stage"),
    ("quotawatch.config", "quotawatch.service", "config is the first stage"),
    ("quotawatch.config", "quotawatch.state", "config is the first stage"),
    ("quotawatch.mail", "quotawatch.retention", "mail access knows no rules"),
    ("quotawatch.mail", "quotawatch.warnings", "mail access knows no warnings"),
    ("quotawatch.mail", "quotawatch.service", "mail access knows no service"),
    ("quotawatch.mail", "quotawatch.state", "mail access keeps no state"),
    ("quotawatch.retention", "quotawatch.mail.imap", "retention speaks through the interface"),
    ("quotawatch.retention", "quotawatch.mail.pop3", "retention speaks through the interface"),
    ("quotawatch.retention", "quotawatch.mail.connect", "retention never logs in"),
    ("quotawatch.retention", "quotawatch.warnings", "retention and warnings are siblings"),
    ("quotawatch.retention", "quotawatch.service", "stages never import the service"),
    ("quotawatch.warnings", "quotawatch.mail.imap", "warnings never speak a mail protocol"),
    ("quotawatch.warnings", "quotawatch.mail.pop3", "warnings never speak a mail protocol"),
    ("quotawatch.warnings", "quotawatch.mail.connect", "warnings never log in to a mailbox"),
    ("quotawatch.warnings", "quotawatch.mail.doveadm", "warnings never ask the mail server"),
    ("quotawatch.retention", "quotawatch.mail.doveadm", "retention speaks through the interface"),
    ("quotawatch.warnings", "quotawatch.service", "stages never import the service"),
    ("quotawatch.service", "quotawatch.cli", "the CLI is on top"),
)
#: plain functions over plain data: they import only these (and the standard library)
PURE = {
    "quotawatch.retention.planner": ("quotawatch.config", "quotawatch.mail.session", "quotawatch.model", "quotawatch.units", "quotawatch.retention.why", "quotawatch.retention.caps"),
    "quotawatch.retention.caps": ("quotawatch.config", "quotawatch.retention.planner"),
    "quotawatch.retention.why": ("quotawatch.config", "quotawatch.mail.session", "quotawatch.units"),
    "quotawatch.warnings.decision": ("quotawatch.config", "quotawatch.model", "quotawatch.units"),
    "quotawatch.warnings.forecast": ("quotawatch.model",),
}  # fmt: skip
#: the neutral modules every stage may use; they import no stage
BASE = (
    "quotawatch.model",
    "quotawatch.units",
    "quotawatch.errors",
    "quotawatch.text",
    "quotawatch.logs",
)
STAGES = ("quotawatch.config", "quotawatch.mail", "quotawatch.retention", "quotawatch.warnings", "quotawatch.service", "quotawatch.cli")  # fmt: skip
#: protocol libraries only the mail adapters may use (python-ldap: mail.ldap, the directory)
PROTOCOL_LIBS = ("imapclient", "imaplib", "poplib", "ldap", "ldapurl")
#: calls that import a module named by their first argument: ``importlib.import_module``,
#: ``__import__`` and ``quotawatch.extras.require`` (the optional extras)
DYNAMIC_IMPORTERS = {"import_module", "__import__", "require"}
#: the edge recorded for such a call whose name is not a literal: the graph cannot see its target
DYNAMIC = "<a module named at run time>"
#: the only modules allowed one: the extras loader itself, and the OAuth2 providers' ``need``,
#: whose callers name their (optional, non-quotawatch) library by a literal
DYNAMIC_OK = ("quotawatch.extras", "quotawatch.mail.oauth2.providers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, me: str, is_package: bool = False) -> set[str]:
    """Every module that the source of module ``me`` imports, anywhere in the file."""
    tree = ast.parse(source)
    package = me if is_package else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and _called(node.func) in DYNAMIC_IMPORTERS and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.add(name.value)
            else:
                found.add(DYNAMIC)
    return found


def _called(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def graph() -> dict[str, set[str]]:
    return {
        module_name(p): imports_of(
            p.read_text(encoding="utf-8"), module_name(p), p.name == "__init__.py"
        )
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """Every forbidden edge of the import graph, as a sentence."""
    out = []
    for importer, imported in edges.items():
        for target in imported:
            if target == DYNAMIC and importer not in DYNAMIC_OK:
                out.append(f"{importer} imports {target}: the import rules cannot see its edge")
            for src, dst, why in FORBIDDEN:
                if _under(importer, src) and _under(target, dst):
                    out.append(f"{importer} imports {target}: {why}")
            if (
                importer in PURE
                and _under(target, "quotawatch")
                and not any(_under(target, ok) for ok in PURE[importer])
            ):
                out.append(f"{importer} imports {target}: a pure module imports only data")
            if any(_under(importer, b) for b in BASE) and any(_under(target, s) for s in STAGES):
                out.append(f"{importer} imports {target}: base modules import no stage")
            if any(_under(target, lib) for lib in PROTOCOL_LIBS) and not _under(
                importer, "quotawatch.mail"
            ):
                out.append(
                    f"{importer} imports {target}: only quotawatch.mail speaks IMAP/POP3/LDAP"
                )
    return out


def test_the_package_keeps_its_import_rules() -> None:
    edges = graph()
    assert "quotawatch.retention.planner" in edges and "quotawatch.mail.imap.session" in edges
    assert violations(edges) == []


@pytest.mark.parametrize(
    ("importer", "target"),
    [
        ("quotawatch.retention.planner", "quotawatch.mail.imap.session"),
        ("quotawatch.retention.rules", "quotawatch.mail.connect"),
        ("quotawatch.warnings.decision", "quotawatch.state"),
        ("quotawatch.mail.session", "quotawatch.mail.pop3.session"),
        ("quotawatch.model", "quotawatch.config"),
        ("quotawatch.service.jobs", "imapclient"),
        ("quotawatch.service.directory", "ldap.controls"),
        ("quotawatch.config.ldap", "ldap"),
    ],
)
def test_a_forbidden_import_is_caught(importer: str, target: str) -> None:
    edges = graph()
    edges[importer] = {*edges[importer], target}
    assert any(v.startswith(f"{importer} imports {target}") for v in violations(edges))


def test_lazy_and_dynamic_imports_count() -> None:
    source = "def f():\n    from quotawatch.mail.imap import session\n    import importlib\n"
    source += "    importlib.import_module('quotawatch.mail.pop3.session')\n"
    found = imports_of(source, "quotawatch.retention.planner")
    assert {"quotawatch.mail.imap.session", "quotawatch.mail.pop3.session"} <= found
    assert violations({"quotawatch.retention.planner": found})


@pytest.mark.parametrize(
    "call",
    [
        "from importlib import import_module\n    import_module('quotawatch.mail.pop3.session')",
        "__import__('quotawatch.mail.pop3.session')",
        "from quotawatch.extras import require\n    require('quotawatch.mail.pop3.session', extra='x')",
    ],
)
def test_every_form_of_dynamic_import_counts(call: str) -> None:
    found = imports_of(f"def f():\n    {call}\n", "quotawatch.warnings.decision")
    assert "quotawatch.mail.pop3.session" in found
    assert violations({"quotawatch.warnings.decision": found})


def test_an_import_by_a_name_made_at_run_time_is_refused() -> None:
    source = "import importlib\ndef f(x):\n    importlib.import_module('quotawatch.mail.' + x)\n"
    found = imports_of(source, "quotawatch.retention.planner")
    assert DYNAMIC in found
    assert any("cannot see" in v for v in violations({"quotawatch.retention.planner": found}))


def test_no_stage_imports_a_later_one_in_a_cycle() -> None:
    """The stages form a chain: config → mail → retention/warnings → service → cli."""
    order = {s: k for k, s in enumerate(STAGES)}
    order["quotawatch.warnings"] = order["quotawatch.retention"]
    late = []
    for importer, imported in graph().items():
        mine = next((s for s in STAGES if _under(importer, s)), None)
        for target in imported:
            theirs = next((s for s in STAGES if _under(target, s)), None)
            if mine and theirs and mine != theirs and order[theirs] > order[mine]:
                late.append(f"{importer} imports {target}")
    assert late == []
