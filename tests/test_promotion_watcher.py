"""The shared promoted-version watcher (online.promotion): failed versions are skipped until the
pointer moves, one loader at a time, pointer gone means rollback, and the check interval holds."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from kairos.registry import ModelRegistry
from online.promotion import PromotedVersionWatcher

MODEL = "demo_model"


class Component:
    """A stand-in model holder: loads count per version, some versions fail, some block."""

    def __init__(self, registry: ModelRegistry, unload: bool = False, **kwargs: Any) -> None:
        self.active: str | None = None
        self.loads: list[str | None] = []
        self.broken: set[str] = set()
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.watcher = PromotedVersionWatcher(
            registry, MODEL, load=self.load, install=self.install, serving=lambda: self.active,
            unload=self.unload if unload else None, label="demo", **kwargs)

    def load(self, version: str | None) -> str:
        self.loads.append(version)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if version in self.broken:
            raise ValueError(f"{version} is broken")
        return f"model {version}"

    def install(self, version: str | None, loaded: str) -> None:
        assert loaded == f"model {version}"
        self.active = version

    def unload(self) -> None:
        self.active = None


def publish(registry: ModelRegistry, tag: str) -> str:
    staging = registry.staging(MODEL)
    (staging / "weights.txt").write_text(tag)
    return registry.publish(MODEL, staging, {"metrics": {}})


def test_a_version_that_fails_is_skipped_until_the_pointer_changes(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    v1, broken = publish(registry, "a"), publish(registry, "b")
    component = Component(registry)
    watcher = component.watcher
    assert watcher.check(wait=True) is False and component.loads == []  # nothing promoted, base serves
    registry.promote(MODEL, v1)
    assert watcher.check(wait=True) is True and component.active == v1 and watcher.swaps == 1

    component.broken.add(broken)
    registry.promote(MODEL, broken)
    assert watcher.check(wait=True) is True
    assert component.active == v1  # the old version keeps serving
    for _ in range(3):
        assert watcher.check() is False  # not retried while the pointer stays
    assert component.loads == [v1, broken]

    # The pointer moves (even back to the same version): a new try, which now succeeds.
    registry.rollback(MODEL)
    assert watcher.check(wait=True) is False  # v1 again: already serving
    component.broken.clear()
    registry.promote(MODEL, broken)
    assert watcher.check(wait=True) is True and component.active == broken
    assert component.loads == [v1, broken, broken] and watcher.swaps == 2


def test_two_checks_during_a_load_start_one_loader(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    v1 = publish(registry, "a")
    component = Component(registry)
    component.gate = threading.Event()
    registry.promote(MODEL, v1)
    assert component.watcher.check() is True
    assert component.started.wait(10)
    assert component.watcher.loading
    assert component.watcher.check() is False and component.watcher.check() is False
    assert component.active is None  # still the old model while loading
    component.gate.set()
    component.watcher.wait_for_load(10)
    assert component.loads == [v1] and component.active == v1 and not component.watcher.loading


def test_a_pointer_that_disappears_rolls_back(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    v1 = publish(registry, "a")
    registry.promote(MODEL, v1)
    # Without unload, "nothing promoted" is loaded like any version (the text encoder's base model).
    loading = Component(registry)
    # With unload, it applies at once on the checking thread (the sequence intent).
    instant = Component(registry, unload=True)
    for component in (loading, instant):
        assert component.watcher.check(wait=True) and component.active == v1
    registry.pointer_path(MODEL).unlink()
    assert loading.watcher.check(wait=True) is True and loading.active is None
    assert loading.loads == [v1, None]
    assert instant.watcher.check() is False and instant.active is None  # no load needed
    assert instant.loads == [v1] and instant.watcher.swaps == 2


def test_a_version_superseded_while_loading_is_dropped(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    v1, v2 = publish(registry, "a"), publish(registry, "b")
    component = Component(registry)
    component.gate = threading.Event()
    registry.promote(MODEL, v1)
    component.watcher.check()
    assert component.started.wait(10)
    registry.promote(MODEL, v2)
    assert component.watcher.check() is False  # one loader at a time; v2 comes after
    component.gate.set()
    component.watcher.wait_for_load(10)
    assert component.active is None  # v1 was no longer wanted: not installed
    assert component.watcher.check(wait=True) is True and component.active == v2


def test_maybe_check_looks_at_most_every_interval_and_never_raises(tmp_path: Path, caplog: Any) -> None:
    registry = ModelRegistry(tmp_path)
    v1 = publish(registry, "a")
    now = [0.0]
    component = Component(registry, check_interval_s=5.0, clock=lambda: now[0])
    component.watcher.maybe_check()  # first look: nothing promoted
    registry.promote(MODEL, v1)
    now[0] = 4.9
    component.watcher.maybe_check()
    component.watcher.wait_for_load(10)
    assert component.active is None  # too soon to look again
    now[0] = 5.0
    component.watcher.maybe_check()
    component.watcher.wait_for_load(10)
    assert component.active == v1

    registry.pointer_path(MODEL).write_text("{not json")  # a hiccup: logged, not raised
    now[0] = 10.0
    with caplog.at_level(logging.WARNING):
        component.watcher.maybe_check()
    assert component.active == v1
    assert "demo: reading the model registry failed" in caplog.text
