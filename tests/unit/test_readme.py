"""README stays in step with the code: every config key and every metric is documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from quotawatch import config
from quotawatch.config.fleet import DoveadmAccess
from quotawatch.config.ldap import LdapSource
from quotawatch.service.metrics import METRIC_NAMES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

MODELS: list[type[BaseModel]] = [
    config.Config,
    config.Account,
    config.AccountSource,
    config.Rule,
    config.Schedule,
    config.Metrics,
    config.Smtp,
    config.Warnings,
    config.AdminDigest,
    config.OAuth2,
    DoveadmAccess,
    LdapSource,
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_config_key_is_in_the_readme(model: type[BaseModel]) -> None:
    missing = [
        info.alias or name
        for name, info in model.model_fields.items()
        if f"{info.alias or name}:" not in README and f"`{info.alias or name}`" not in README
    ]
    assert not missing, f"README does not document {model.__name__} keys {missing}"


def test_every_metric_is_in_the_readme() -> None:
    missing = [name for name in METRIC_NAMES if name not in README]
    assert not missing, f"README does not list metrics {missing}"


def test_readme_gives_the_two_commands() -> None:
    assert "scripts/demo " in README and "scripts/test " in README
