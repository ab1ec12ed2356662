"""Hot swap of the text model: promotions and rollbacks under concurrent search load fail nothing,
and search serves old vectors until the re-embedded index is complete."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.registry import ModelRegistry
from kairos.stores.catalog import CatalogItem
from online import embeddings
from online.embeddings import TEXT_MODEL, TextEncoder, load_sentence_transformer
from serving.app import create_app
from serving.deps import Services
from serving.routers.search import item_indexer

LAT, LON = 40.7580, -73.9855
T0 = 1_777_000_000.0
TITLES = ["Zen Spa — deep tissue massage", "Ramen House — tonkotsu ramen", "Blue Note — live jazz",
          "Sunrise Yoga — vinyasa class", "Tony's Pizza — a slice and a soda", "Nail Bar — manicure"]


def catalog_items() -> list[CatalogItem]:
    return [CatalogItem(item_id=f"i{n}", business_id="b1", kind="offer", category="spa", title=t, text=t,
                        lat=LAT + n * 0.001, lon=LON, cell=None, price=10.0 + n, original_price=None, currency="USD",
                        valid_from=None, valid_to=None, deleted=False, updated_ts=T0)
            for n, t in enumerate(TITLES)]


def publish_perturbed(registry: ModelRegistry, noise: float, seed: int) -> str:
    """A "fine-tuned" version: the base weights with noise, so its vectors differ measurably."""
    model = load_sentence_transformer()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "encoder.layer.5" in name and p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=generator) * noise)
    staging = registry.staging(TEXT_MODEL)
    model.save(str(staging))
    return registry.publish(TEXT_MODEL, staging, {"metrics": {}, "parent": "base"})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("kzC_hot_swap")
    registry = ModelRegistry(home / "models")
    versions = [publish_perturbed(registry, 0.05, seed) for seed in (1, 2)]
    encoder = TextEncoder(registry_root=home / "models", check_interval_s=0.05)
    previous = embeddings.set_shared_encoder(encoder)
    services = Services.start(Settings(home=home, auth_required=False, ranker="transparent",
                                       feast_project=f"h{uuid.uuid4().hex[:8]}", search_refresh_s=0.05))
    services.catalog.upsert(catalog_items())
    try:
        with TestClient(create_app(services=services)) as client:
            yield {"client": client, "services": services, "registry": registry, "encoder": encoder,
                   "versions": versions}
    finally:
        services.close()
        embeddings.set_shared_encoder(previous)


def wait_until(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_encoder_follows_the_pointer_and_caches_per_version(env) -> None:
    encoder, registry = env["encoder"], env["registry"]
    assert encoder.version is None  # nothing promoted: the base model
    base = encoder.encode(["cheap spa tonight"])[0].copy()
    registry.promote(TEXT_MODEL, env["versions"][0])
    wait_until(lambda: (encoder.encode(["x"]), encoder.version)[1] == env["versions"][0])
    swapped = encoder.encode(["cheap spa tonight"])[0]
    # A new model's vectors, not the base model's cache entry.
    assert not np.allclose(base, swapped, atol=1e-4)
    registry.rollback(TEXT_MODEL)
    wait_until(lambda: (encoder.encode(["x"]), encoder.version)[1] is None)
    np.testing.assert_allclose(encoder.encode(["cheap spa tonight"])[0], base, atol=1e-6)


def test_a_version_that_fails_to_load_leaves_the_old_model_serving(env, tmp_path: Path) -> None:
    encoder, registry = env["encoder"], env["registry"]
    staging = registry.staging(TEXT_MODEL)
    (staging / "config.json").write_text("{not json")
    broken = registry.publish(TEXT_MODEL, staging, {"metrics": {}})
    registry.promote(TEXT_MODEL, broken)
    encoder.check(wait=True)
    assert encoder.version is None
    assert encoder.encode(["spa"]).shape == (1, 384)
    registry.rollback(TEXT_MODEL)
    encoder.check(wait=True)
    assert encoder.version is None


def test_search_under_load_through_promotion_and_rollback(env) -> None:
    client, registry, encoder = env["client"], env["registry"], env["encoder"]
    indexer = item_indexer(env["services"])
    errors: list[str] = []
    done = threading.Event()
    count = [0]

    def hammer() -> None:
        while not done.is_set():
            response = client.get("/v1/search", params={"q": "massage", "lat": LAT, "lon": LON, "radius_km": 5})
            count[0] += 1
            if response.status_code != 200 or not response.json()["items"]:
                errors.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        assert indexer.model_version is None
        target = env["versions"][1]
        registry.promote(TEXT_MODEL, target)
        wait_until(lambda: indexer.model_version == target)  # re-embedded in the background
        assert encoder.version == target and indexer.rebuilds >= 1
        # The index's vectors are the new model's.
        item = indexer.index.vector("i0")
        expected = encoder.snapshot().encode([f"spa: {TITLES[0]}"])[0]
        np.testing.assert_allclose(item, expected, atol=1e-5)
        registry.rollback(TEXT_MODEL)
        wait_until(lambda: indexer.model_version is None)
        time.sleep(0.3)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == []
    assert count[0] > 10


def test_search_keeps_old_vectors_until_the_new_index_is_complete(env, monkeypatch) -> None:
    registry, encoder = env["registry"], env["encoder"]
    indexer = item_indexer(env["services"])
    indexer.maybe_refresh()
    old_index, old_model = indexer.index, indexer.model_version
    gate = threading.Event()
    original = type(encoder.snapshot()).encode

    def slow_encode(self: Any, texts: Any) -> Any:
        if self.version == env["versions"][0] and len(texts) > 1:
            gate.wait(30)  # the catalog re-embedding is stuck until the test lets it go
        return original(self, texts)

    monkeypatch.setattr(type(encoder.snapshot()), "encode", slow_encode)
    registry.promote(TEXT_MODEL, env["versions"][0])
    wait_until(lambda: encoder.version == env["versions"][0] or (encoder.encode(["x"]) is None))
    indexer.follow_model()
    wait_until(lambda: indexer.rebuilding)
    # Mid-rebuild: search still uses the old index and the old model for queries.
    assert indexer.index is old_index and indexer.model_version == old_model
    response = env["client"].get("/v1/search", params={"q": "massage", "lat": LAT, "lon": LON, "radius_km": 5})
    assert response.status_code == 200 and response.json()["items"]
    gate.set()
    indexer.wait_for_rebuild(60)
    assert indexer.index is not old_index and indexer.model_version == env["versions"][0]
    registry.rollback(TEXT_MODEL)
