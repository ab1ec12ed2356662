"""`kairos demo --no-serve` end to end: simulate, stream, serve, print both users' suggestions."""

from __future__ import annotations

import re

from rich.console import Console
from typer.testing import CliRunner

from kairos.cli import app
from kairos.config import Settings
from kairos.demo import run_demo
from kairos.net import free_port
from kairos.stores.api_keys import open_api_keys, parse_token


def test_demo_prints_resident_and_traveller_suggestions(tmp_path):
    console = Console(record=True, width=200)
    settings = Settings(home=tmp_path, api_port=free_port(), feast_project="demo_test")
    run_demo(settings, days=1, seed=3, serve=False, console=console)
    text = console.export_text()
    assert "suggestions for resident" in text
    assert "just landed in New York from Mumbai" in text
    assert "home near Mumbai" in text
    assert text.count("score parts of #1") == 2
    assert "travelling: True" in text  # the traveller, seen far from home
    assert "travelling: False" in text  # the resident
    assert "taste 0.00" not in text.split("score parts of #1")[1][:200]  # the index was warmed

    # The printed keys are whole and verify against the key store, each with its scope.
    printed = dict(re.findall(r"^\s+(app|analyst|admin|business:b0001)\s+(kairos_\S+)$", text, re.M))
    assert set(printed) == {"app", "analyst", "admin", "business:b0001"}
    store = open_api_keys(settings)
    try:
        for scope, token in printed.items():
            parsed = parse_token(token)
            assert parsed is not None, token
            key = store.get(parsed[0])
            assert key is not None and key.verify(parsed[1]) and key.scope == scope
    finally:
        store.close()


def test_cli_rejects_bad_settings_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("KAIROS_PROFILE", "cassandra")
    result = CliRunner().invoke(app, ["deadletters", "list"])
    assert result.exit_code != 0
    assert "KAIROS_PROFILE must be 'local' or 'redis'" in result.output
