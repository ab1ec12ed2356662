"""``feast apply`` and ``feast ui`` keep working on ``feature_repo/`` (a temporary copy, with a
temporary KAIROS_HOME), and Kairos' own registration agrees with what ``feast apply`` wrote.

``feast ui`` in Feast 0.67 mounts Feast's REST registry API, which imports ``grpc``: that is why the
project pins ``feast[grpcio]``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.net import free_port

REPO = Path(__file__).resolve().parent.parent / "feature_repo"
FEAST = Path(sys.executable).parent / "feast"


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the feature repo after ``feast apply`` against a fresh home."""
    root = tmp_path_factory.mktemp("feast_cli")
    repo, home = root / "feature_repo", root / "home"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    env = {**os.environ, "KAIROS_HOME": str(home)}
    done = subprocess.run([str(FEAST), "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    for view in VIEWS:
        assert f"Created feature view {view}" in done.stdout
    return repo, env


def test_feast_apply_registers_every_view_and_kairos_agrees(applied: tuple[Path, dict[str, str]]) -> None:
    from feast import FeatureStore

    repo, env = applied
    home = Path(env["KAIROS_HOME"])
    assert (home / "feast" / "registry.db").exists() and (home / "feast" / "online_store.db").exists()
    # Kairos registers the same objects in code (project "kairos", same home): nothing to change,
    # and the registry still lists exactly the views of kairos/features.py with their fields.
    from kairos.stores.online_features import OnlineFeatures, repo_config

    settings = Settings(home=home, auth_required=False)
    OnlineFeatures(settings)
    store = FeatureStore(config=repo_config(settings))
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == set(VIEWS)
    for name, spec in VIEWS.items():
        # (Feast keeps the schema in its own order and lists the join keys among the columns.)
        assert {f.name for f in views[name].features} == set(spec.field_names)
        assert sorted(views[name].entities) == sorted(spec.entities)
        assert views[name].tags["freshness_s"] == str(spec.freshness_s)


def test_feast_ui_serves_its_page(applied: tuple[Path, dict[str, str]]) -> None:
    repo, env = applied
    port = free_port()
    proc = subprocess.Popen([str(FEAST), "ui", "-h", "127.0.0.1", "-p", str(port)], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            output = proc.stdout.read() if proc.stdout and proc.poll() is not None else ""
            pytest.fail(f"feast ui did not serve within 90 s:\n{output[-3000:]}")
        assert page.status_code == 200 and "<html" in page.text.lower()
        projects = httpx.get(f"http://127.0.0.1:{port}/projects-list.json", timeout=5).json()
        assert any(p.get("id") == "kairos" or p.get("name") == "kairos" for p in projects["projects"]), projects
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()

