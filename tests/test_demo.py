"""`kairos demo --no-serve` end to end: simulate, stream, serve, print both users' suggestions."""

from __future__ import annotations

from rich.console import Console
from typer.testing import CliRunner

from kairos.cli import app
from kairos.config import Settings
from kairos.demo import run_demo
from kairos.net import free_port


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


def test_cli_rejects_bad_settings_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("KAIROS_PROFILE", "cassandra")
    result = CliRunner().invoke(app, ["deadletters", "list"])
    assert result.exit_code != 0
    assert "KAIROS_PROFILE must be 'local' or 'redis'" in result.output
