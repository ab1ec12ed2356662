"""The pricing feed end to end: a catalog and an offline log under a temporary home, the market
model built from the log (or loaded from a checkpoint), the routes, their stream and their errors.

Pricing reads no Feast rows, so these tests build :class:`Services` without Feast (seconds faster).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.geo import cell_of
from kairos.schema import Event
from kairos.stores.catalog import CatalogItem, SqliteCatalog
from kairos.stores.event_store import SqliteEventStore
from kairos.stores.offline_log import OfflineLog
from online.market_model import MarketModel, build_market_model, market_model_path
from serving.app import create_app
from serving.deps import Services
from tests.api_errors import assert_error

AT = datetime(2026, 5, 4, 8, tzinfo=UTC)  # a Monday, 8:00 UTC: the morning rush
WEEK_AGO = AT.replace(hour=0) - timedelta(days=7)
LAT, LON = 40.7265, -73.9815  # East Village
KM = 1 / 111.2
FAR_FUTURE = datetime(2036, 1, 1, tzinfo=UTC).timestamp()


def catalog_item(item_id: str, business: str, category: str, price: float | None, km_north: float = 0.0,
                 original: float | None = None, valid_to: float = FAR_FUTURE, lat: float = LAT,
                 lon: float = LON) -> CatalogItem:
    lat = lat + km_north * KM
    return CatalogItem(
        item_id=item_id, business_id=business, kind="offer", category=category, title=f"{item_id} title",
        text=None, lat=lat, lon=lon, cell=cell_of(lat, lon, 8), price=price, original_price=original,
        currency="USD", valid_from=datetime(2020, 1, 1, tzinfo=UTC).timestamp(), valid_to=valid_to,
        deleted=False, updated_ts=WEEK_AGO.timestamp(),
    )


CATALOG = [
    catalog_item("b1-latte", "b1", "coffee", 4.0, original=5.0),
    catalog_item("b1-cake", "b1", "coffee", 6.0, km_north=0.1),
    catalog_item("b1-old", "b1", "coffee", 3.0, valid_to=(AT - timedelta(days=1)).timestamp()),
    catalog_item("b1-tasting", "b1", "coffee", None),  # free: nothing to price
    catalog_item("b2-espresso", "b2", "coffee", 4.8, km_north=0.3),
    catalog_item("b3-brew", "b3", "coffee", 5.2, km_north=-0.4),
    catalog_item("b3-far", "b3", "coffee", 9.0, km_north=5.0),  # beyond the competitor radius
    catalog_item("b2-spa", "b2", "spa", 80.0, km_north=0.2),  # another category
    catalog_item("b4-massage", "b4", "spa", 40.0, lat=19.0596, lon=72.8295),  # Mumbai: no history at all
]


def history() -> list[Event]:
    """A week up to Monday 8:00 of the latte and the espresso: every morning at 8 a rush of views
    and eight latte sales, one view an hour otherwise."""
    items = [c for c in CATALOG if c.item_id in ("b1-latte", "b2-espresso")]
    events = [
        Event(f"{c.item_id}-create", WEEK_AGO - timedelta(days=1), "business", c.business_id, "offer",
              item_id=c.item_id, category=c.category, lat=c.lat, lon=c.lon, cell=c.cell, price=c.price,
              original_price=c.original_price, valid_from=datetime(2020, 1, 1, tzinfo=UTC),
              valid_to=datetime.fromtimestamp(FAR_FUTURE, UTC), text=c.title, attrs={"op": "create"})
        for c in items
    ]
    for h in range(7 * 24 + 8):
        start = WEEK_AGO + timedelta(hours=h)
        rush = start.hour == 8
        for c in items:
            for k in range(10 if rush else 1):
                events.append(Event(f"v-{c.item_id}-{h}-{k}", start + timedelta(minutes=1 + k), "user",
                                    f"u{k}", "view", item_id=c.item_id, category="coffee", lat=LAT, lon=LON,
                                    cell=c.cell))
        if rush:
            for k in range(8):
                events.append(Event(f"p-{h}-{k}", start + timedelta(minutes=20 + k), "user", f"u{k}",
                                    "purchase", item_id="b1-latte", category="coffee", price=4.0,
                                    attrs={"qty": 1}))
    return events


@dataclass
class Env:
    services: Services
    client: TestClient


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = Settings(home=tmp_path_factory.mktemp("kairos_business"), auth_required=False, feast_project=f"b{uuid.uuid4().hex[:8]}")
    OfflineLog(settings.offline_dir).write_events(history())
    catalog = SqliteCatalog(settings.catalog_path)
    catalog.upsert(CATALOG)
    services = Services(settings=settings, event_store=SqliteEventStore(settings.event_log_path), catalog=catalog,
                        features=None)
    with TestClient(create_app(services=services)) as client:
        yield Env(services, client)
    services.close()


def pricing(env: Env, business: str = "b1", **params: Any) -> Any:
    query = {"at": AT.isoformat(), "tz": "UTC", **params}
    return env.client.get(f"/v1/businesses/{business}/pricing", params={k: v for k, v in query.items() if v is not None})


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["item_id"]: i for i in body["items"]}


def test_feed_prices_every_active_item_and_says_why_others_are_skipped(env: Env) -> None:
    response = pricing(env)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["business_id"] == "b1" and datetime.fromisoformat(body["at"]) == AT
    assert body["timezone"] == "UTC" and body["model"]["source"] == "offline log"
    assert set(by_id(body)) == {"b1-latte", "b1-cake"}
    skipped = {s["item_id"]: s["reason"] for s in body["skipped"]}
    assert skipped["b1-old"].startswith("expired (ended 2026-05-03T08:00:00")
    assert skipped["b1-tasting"].startswith("no price")
    latte = by_id(body)["b1-latte"]
    assert latte["current_price"] == 4.0 and latte["list_price"] == 5.0 and latte["original_price"] == 5.0
    assert latte["demand"]["slot"] == "Monday 08:00" and latte["demand"]["hours_seen"] >= 160
    # Monday 8:00 is a rush hour: the forecast and the usual for the slot are both high.
    assert latte["demand"]["usual"] > 10 and latte["demand"]["forecast"] > 10 and not latte["demand"]["stale"]
    assert latte["competitors"] == {"count": 2, "radius_km": 1.0, "median_price": 5.0, "min_price": 4.8,
                                    "max_price": 5.2}
    assert latte["expected_sales_now"] > 1.5 and latte["expected_views_next_hour"] > 3.0
    for item in body["items"]:
        assert item["bounds"]["lower"] <= item["recommended_price"] <= item["bounds"]["upper"]
        assert item["reason"].startswith(("Raise", "Lower", "Keep"))


def test_without_learned_price_response_or_capacity_the_feed_holds_and_says_what_is_missing(env: Env) -> None:
    latte = by_id(pricing(env).json())["b1-latte"]
    assert latte["action"] == "hold" and latte["recommended_price"] == 4.0
    assert latte["elasticity"]["source"] == "prior"
    assert latte["missing"] == ["sales at different prices for coffee (no price response learned yet)"]
    assert "not learned yet" in latte["reason"] and "2 competitors within 1 km are 25 % dearer" in latte["reason"]


def test_a_busy_hour_with_a_capacity_raises_the_price(env: Env) -> None:
    latte = by_id(pricing(env, capacity=1).json())["b1-latte"]
    assert latte["action"] == "raise" and latte["capacity"] == 1
    assert latte["recommended_price"] == pytest.approx(4.6)  # +15 %: one step
    assert latte["guardrail"] == "max step"
    assert "you would sell out" in latte["reason"] and "capacity 1" in latte["reason"]
    assert latte["expected_revenue"] > latte["expected_revenue_now"]
    small = by_id(pricing(env, capacity=1, max_step=0.05).json())["b1-latte"]
    assert small["recommended_price"] == pytest.approx(4.2)
    # An hour in the night: demand is low, nothing to sell out.
    night = by_id(pricing(env, capacity=1, at=(AT - timedelta(hours=5)).isoformat()).json())["b1-latte"]
    assert night["action"] != "raise"


def test_item_filter_and_items_of_other_businesses(env: Env) -> None:
    body = pricing(env, item_id="b1-cake").json()
    assert [i["item_id"] for i in body["items"]] == ["b1-cake"]
    assert_error(pricing(env, item_id="b2-espresso"), 404, "item 'b2-espresso' is not an item of business 'b1'")
    assert_error(pricing(env, item_id="nope"), 404, "unknown item 'nope'")
    assert_error(pricing(env, item_id="b1-old"), 409, "item 'b1-old' is not on sale", "expired")


def test_unknown_business_is_404(env: Env) -> None:
    error = assert_error(pricing(env, "b999"), 404, "unknown business 'b999'")
    assert error["message"] == "unknown business 'b999': no items of it have been seen"


def test_business_without_history_gets_an_explicit_not_enough_data_answer(env: Env) -> None:
    body = pricing(env, "b4").json()
    assert body["status"] == "not_enough_data"
    massage = by_id(body)["b4-massage"]
    assert massage["recommended_price"] is None and massage["action"] is None
    assert massage["missing"] == ["demand history for spa in this area",
                                  "sales at different prices for spa (no price response learned yet)"]
    assert massage["reason"].startswith("Not enough data yet: demand history for spa in this area")
    assert body["missing"] == massage["missing"]
    # Without a zone, hours are read in solar time from the longitude (Mumbai: UTC+5).
    assert pricing(env, "b4", tz=None).json()["timezone"].startswith("UTC+5 (estimated from longitude")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"floor_ratio": 0}, "floor_ratio: must be greater than 0"),
        ({"floor_ratio": 1.5}, "floor_ratio: must be less than or equal to 1"),
        ({"max_step": 1}, "max_step: must be less than 1"),
        ({"max_step": "nan"}, "max_step: must be a finite number"),
        ({"capacity": 0}, "capacity: must be greater than 0"),
        ({"capacity": -3}, "capacity: must be greater than 0"),
        ({"radius_km": 11}, "radius_km: must be less than or equal to 10"),
        ({"tz": "Mars/Olympus_Mons"}, "tz: unknown time zone 'Mars/Olympus_Mons'"),
        ({"at": "tomorrow"}, "at: must be an ISO-8601 time"),
        ({"item_id": "has space"}, "item_id: must match"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(env: Env, params: dict[str, Any], fragment: str) -> None:
    assert_error(pricing(env, **params), 422, fragment)


@pytest.mark.parametrize("business", ["b 1", "x" * 65, "semi;colon"])
def test_bad_business_id_is_422(env: Env, business: str) -> None:
    assert_error(pricing(env, business), 422, "business_id: must match")


def test_checkpoint_is_preferred_and_reloaded_when_it_changes(env: Env) -> None:
    path = market_model_path(env.services.settings)
    try:
        MarketModel().save(path)  # an empty checkpoint: the flow has just started
        body = pricing(env).json()
        assert body["model"]["source"] == "checkpoint" and body["model"]["events"] == 0
        assert body["status"] == "not_enough_data"
        full = build_market_model(env.services.settings)
        full.save(path)
        stat = path.stat()
        os.utime(path, (stat.st_atime, stat.st_mtime + 5))  # a later checkpoint, whatever the clock
        body = pricing(env).json()
        assert body["model"]["source"] == "checkpoint" and body["model"]["events"] == full.n_events
        path.write_bytes(b"not a pickle")  # a broken file keeps the model already loaded
        os.utime(path, (stat.st_atime, stat.st_mtime + 10))
        assert pricing(env).json()["model"]["events"] == full.n_events
    finally:
        path.unlink(missing_ok=True)
    assert pricing(env).json()["model"]["source"] == "offline log"


def read_event(lines: Iterator[str]) -> tuple[str, dict[str, Any]]:
    """The next server-sent event (comments skipped): ``(event name, data)``."""
    name, data = "", ""
    for line in lines:
        if line.startswith(":"):
            continue
        if not line:
            if name:
                return name, json.loads(data)
            continue
        field, _, value = line.partition(": ")
        if field == "event":
            name = value
        elif field == "data":
            data = value
    raise AssertionError("the stream ended")


def test_stream_sends_a_snapshot_then_a_change(env: Env) -> None:
    cake = next(c for c in CATALOG if c.item_id == "b1-cake")
    params = {"interval_s": 0.05, "max_events": 2, "tz": "UTC"}
    try:
        with env.client.stream("GET", "/v1/businesses/b1/pricing/stream", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            name, snapshot = read_event(lines)
            assert name == "snapshot" and {i["item_id"] for i in snapshot["items"]} == {"b1-latte", "b1-cake"}
            # The business changes its price: the next check pushes the item's new recommendation.
            env.services.catalog.upsert([replace(cake, price=7.5, updated_ts=cake.updated_ts + 1)])
            name, change = read_event(lines)
            assert name == "recommendation" and change["item_id"] == "b1-cake"
            assert change["current_price"] == 7.5
            assert list(lines) == []  # max_events reached: the stream ends
    finally:
        env.services.catalog.upsert([replace(cake, updated_ts=cake.updated_ts + 2)])


def test_stream_errors_are_plain_responses_before_it_starts(env: Env) -> None:
    assert_error(env.client.get("/v1/businesses/b999/pricing/stream"), 404, "unknown business")
    assert_error(env.client.get("/v1/businesses/b1/pricing/stream", params={"interval_s": 0}), 422,
                 "interval_s: must be greater than or equal to 0.05")
    assert_error(env.client.get("/v1/businesses/b1/pricing/stream", params={"min_change": 2}), 422, "min_change")


def test_openapi_documents_the_routes(env: Env) -> None:
    paths = env.client.get("/openapi.json").json()["paths"]
    assert {"/v1/businesses/{business_id}/pricing", "/v1/businesses/{business_id}/pricing/stream"} <= set(paths)


def test_model_source_rebuilds_from_a_grown_log_in_the_background(tmp_path: Any) -> None:
    from serving.business_views import MarketModelSource

    settings = Settings(home=tmp_path)
    events = history()
    OfflineLog(settings.offline_dir).write_events(events[:100])
    source = MarketModelSource(settings, rebuild_interval_s=0.0)
    first = source.get()
    assert first.n_events == 100 and source.origin == "offline log"
    part = OfflineLog(settings.offline_dir).write_events(events[100:200])
    assert part is not None
    os.utime(part, (part.stat().st_atime, part.stat().st_mtime + 5))  # newer than the first part
    assert source.get() is first  # served at once; the rebuild runs meanwhile
    source.wait()
    assert source.get().n_events == 200
