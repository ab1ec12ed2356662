"""Model registry: versions appear whole, the pointer swaps atomically, promote/rollback, the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kairos.registry import ModelRegistry, RegistryError


def publish(reg: ModelRegistry, model: str = "next_category", **meta: object) -> str:
    staging = reg.staging(model)
    (staging / "weights.bin").write_bytes(b"w")
    return reg.publish(model, staging, {"metrics": {"acc@1": 0.5}, **meta})


def test_versions_metadata_promote_and_rollback(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    v1, v2 = publish(reg), publish(reg, parent="v0001")
    assert (v1, v2) == ("v0001", "v0002")
    meta = reg.metadata("next_category", v2)
    assert meta["parent"] == "v0001" and meta["code_version"] and meta["created_at"] > 0
    assert reg.current("next_category") is None
    reg.promote("next_category", v1)
    reg.promote("next_category", v2)
    assert reg.current("next_category") == v2
    assert reg.rollback("next_category").version == v1
    assert reg.rollback("next_category").version is None
    with pytest.raises(RegistryError):
        reg.rollback("next_category")
    with pytest.raises(RegistryError):
        reg.promote("next_category", "v0042")
    with pytest.raises(RegistryError):
        reg.metadata("next_category", "../etc")
    assert not list(tmp_path.glob("next_category/.staging-*"))


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(publish(reg))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == [f"v{n:04d}" for n in range(1, 9)]


def test_pointer_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    versions = [publish(reg) for _ in range(3)]
    stop, bad = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                raw = reg.pointer_path("next_category").read_text()
            except FileNotFoundError:
                continue
            try:
                assert json.loads(raw)["version"] in versions
            except Exception as exc:  # noqa: BLE001 - any partial read is the failure we look for
                bad.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(200):
        reg.promote("next_category", versions[n % 3])
    stop.set()
    reader.join()
    assert bad == []


def test_cli_list_promote_rollback(tmp_path: Path) -> None:
    from kairos.cli import app

    reg = ModelRegistry(tmp_path / "models")
    v1 = publish(reg, "text_encoder")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "promote", "text_encoder", v1, "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert reg.current("text_encoder") == v1
    assert "v0001" in runner.invoke(app, ["train", "list", "--home", str(tmp_path)]).output
    bad = runner.invoke(app, ["train", "promote", "text_encoder", "v0099", "--home", str(tmp_path)])
    assert bad.exit_code != 0 and "no version" in bad.output
    assert runner.invoke(app, ["train", "promote", "nope", "v0001", "--home", str(tmp_path)]).exit_code != 0
    assert runner.invoke(app, ["train", "rollback", "text_encoder", "--home", str(tmp_path)]).exit_code == 0
    assert reg.current("text_encoder") is None
    assert runner.invoke(app, ["train", "schedule", "--every", "soon", "--home", str(tmp_path)]).exit_code != 0
