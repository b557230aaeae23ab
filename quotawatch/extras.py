"""Optional dependencies: import one, or fail with one line naming the extra to install.

Every feature that needs a package outside the core dependencies imports it through
``require`` at the point of use (never at module import time), e.g.::

    msal = require("msal", extra="oauth2", feature="OAuth2 login")

and declares the package under ``[project.optional-dependencies]`` in pyproject.toml, so a
missing package reads: ``OAuth2 login needs the Python package msal: pip install
'quotawatch[oauth2]'`` (exit 2), never a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from quotawatch.errors import QuotawatchError


class MissingExtra(QuotawatchError):
    """Raised when a feature needs an optional package that is not installed; names the extra."""

    reason = "config"

    def __init__(self, module: str, extra: str, feature: str, package: str | None = None) -> None:
        self.module = module
        self.extra = extra
        package = package or module
        super().__init__(
            f"{feature} needs the Python package {package}: "
            f"pip install 'quotawatch[{extra}]' (or pipx inject quotawatch {package})"
        )


def require(
    module: str, *, extra: str, feature: str | None = None, package: str | None = None
) -> ModuleType:
    """Import ``module``; MissingExtra naming ``extra`` if it (or one of its imports) is missing.

    ``package``: the name to install when it differs from the module's (python-ldap: ldap).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(module, extra, feature or f"this feature ({extra})", package) from None
