"""An optional dependency missing at run time is one line naming the extra to install."""

from __future__ import annotations

import json

import pytest

from quotawatch.errors import QuotawatchError
from quotawatch.extras import MissingExtra, require


def test_require_returns_the_module_when_installed() -> None:
    assert require("json", extra="none") is json


def test_a_missing_package_names_the_extra_in_one_line() -> None:
    with pytest.raises(MissingExtra) as caught:
        require("quotawatch_no_such_package", extra="oauth2", feature="OAuth2 login")
    message = str(caught.value)
    assert message == (
        "OAuth2 login needs the Python package quotawatch_no_such_package: "
        "pip install 'quotawatch[oauth2]' (or pipx inject quotawatch quotawatch_no_such_package)"
    )
    assert "\n" not in message
    assert isinstance(caught.value, QuotawatchError) and caught.value.reason == "config"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
