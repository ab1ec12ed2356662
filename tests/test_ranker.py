"""The transparent ranker: each part, the total, the reason and the competitor comparison."""

from __future__ import annotations

import doctest
import math
from datetime import UTC, datetime

import pytest

import online.transparent_ranker as transparent_ranker
from kairos.schema import CATEGORIES
from kairos.stores.catalog import CatalogItem
from online.transparent_ranker import (
    PARTS,
    Candidate,
    RankContext,
    TransparentRanker,
    area_price,
    category_plural,
    format_distance,
    format_minutes,
    interest_share,
    ordinal,
    parse_affinity,
    price_vs_area,
    sensitivity_multiplier,
)

AT = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
T0 = AT.timestamp()
HOUR = 3600.0
# A point in Manhattan; 0.009 degrees of latitude is about 1 km.
LAT, LON = 40.7580, -73.9855
KM_LAT = 1 / 111.2


def spa(
    item_id: str, km: float, price: float | None, original: float | None = None, **kw: object
) -> Candidate:
    fields: dict = {"valid_to": T0 + 2 * HOUR, **kw}
    return Candidate(
        item_id,
        fields.pop("category", "spa"),
        LAT + km * KM_LAT,
        LON,
        price=price,
        original_price=original,
        **fields,
    )


def context(items: list[Candidate], radius_km: float = 3.0, **user: object) -> RankContext:
    return RankContext.build(LAT, LON, AT, items, radius_km=radius_km, user=user or None)


def test_docstring_example_runs() -> None:
    result = doctest.testmod(transparent_ranker, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- parts ---------------------------------------------------------------------------------------


def test_parse_affinity_accepts_json_text_or_mapping_and_drops_junk() -> None:
    assert parse_affinity('{"spa": 0.6, "coffee": 0.4}') == {"spa": 0.6, "coffee": 0.4}
    assert parse_affinity({"spa": 1}) == {"spa": 1.0}
    for junk in (None, "", "not json", "[1, 2]", 3.0):
        assert parse_affinity(junk) == {}
    assert parse_affinity('{"spa": 0.5, "x": -1, "y": "a", "z": true, "w": NaN}') == {"spa": 0.5}


def test_interest_is_neutral_at_cold_start_and_relative_to_the_favourite_otherwise() -> None:
    assert interest_share({}, "spa") == 0.5
    assert interest_share({}, None) == 0.5
    assert interest_share({"spa": 3.0, "food": 1.0}, "spa") == 1.0
    assert interest_share({"spa": 3.0, "food": 1.0}, "food") == pytest.approx(1 / 3)
    assert interest_share({"spa": 0.3, "food": 0.3, "retail": 0.4}, "spa") == pytest.approx(0.75)
    assert interest_share({"spa": 1.0}, "coffee") == 0.0
    assert interest_share({"spa": 1.0}, None) == 0.0


def test_price_vs_area_is_relative_to_the_median_and_clipped() -> None:
    assert price_vs_area(30.0, 60.0) == pytest.approx(0.5)
    assert price_vs_area(90.0, 60.0) == pytest.approx(-0.5)
    assert price_vs_area(500.0, 60.0) == -1.0
    assert price_vs_area(None, 60.0) == 0.0
    assert price_vs_area(30.0, None) == 0.0
    assert price_vs_area(30.0, 0.0) == 0.0


def test_sensitivity_multiplier_is_neutral_when_unknown() -> None:
    assert sensitivity_multiplier(None) == 1.0
    assert sensitivity_multiplier(float("nan")) == 1.0
    assert sensitivity_multiplier(0.0) == 0.5
    assert sensitivity_multiplier(1.0) == 1.5
    assert sensitivity_multiplier(7.0) == 1.5


def test_distance_and_travel_time_decay() -> None:
    ranker = TransparentRanker()
    near, far = spa("near", 0.0, 10.0), spa("far", 1.5, 10.0)
    ctx = context([near, far])
    assert ranker.score_one(ctx, near).parts["distance"] == pytest.approx(1.0)
    scored = ranker.score_one(ctx, far)
    assert scored.parts["distance"] == pytest.approx(math.exp(-1), rel=1e-2)
    assert scored.travel_minutes == pytest.approx(1.5 / 4.8 * 60, rel=1e-2)
    assert scored.parts["travel_time"] == pytest.approx(math.exp(-scored.travel_minutes / 20.0))


@pytest.mark.parametrize(
    ("valid_from", "valid_to", "travel_min", "expected"),
    [
        (None, None, 5.0, 1.0),  # open, no end
        (T0 - HOUR, T0 + 2 * HOUR, 5.0, 1.0),  # plenty of time left
        (None, T0 + 20 * 60, 0.0, 20 / 30),  # ends within 30 min: penalised
        (None, T0 + 20 * 60, 10.0, 10 / 30),  # ... more so when it takes 10 min to get there
        (None, T0 + 5 * 60, 10.0, 0.0),  # closed before we arrive
        (None, T0, 0.0, 0.0),  # just ended
        (T0 + 10 * 60, None, 15.0, 1.0),  # starts before we get there: no wait
        (T0 + 2 * HOUR, None, 0.0, math.exp(-1)),  # starts in 2 h
    ],
)
def test_timing(valid_from: float | None, valid_to: float | None, travel_min: float, expected: float) -> None:
    item = Candidate("x", "spa", LAT, LON, valid_from=valid_from, valid_to=valid_to)
    assert TransparentRanker().timing(item, T0, travel_min) == pytest.approx(expected)


def test_popularity_is_half_at_the_prior_and_grows_with_ctr() -> None:
    ranker = TransparentRanker()
    unknown = Candidate("a", "spa", LAT, LON)
    assert ranker.popularity(unknown) == pytest.approx(0.5)
    assert ranker.popularity(Candidate("b", "spa", LAT, LON, views_24h=200, clicks_24h=80)) > 0.8
    assert ranker.popularity(Candidate("c", "spa", LAT, LON, views_24h=200, clicks_24h=0)) < 0.5
    # One lucky click on one view is not a hit: the prior keeps it close to 0.5.
    assert ranker.popularity(Candidate("d", "spa", LAT, LON, views_24h=1, clicks_24h=1)) < 0.7
    # More clicks than views (late views) cannot push it above a 100 % CTR.
    assert ranker.popularity(Candidate("e", "spa", LAT, LON, views_24h=2, clicks_24h=50)) <= 1.0


def test_discount_part_and_sensitivity_scaling() -> None:
    ranker = TransparentRanker()
    item = spa("d", 0.5, 30.0, 60.0)
    keen = ranker.score_one(context([item], discount_sensitivity=1.0), item)
    indifferent = ranker.score_one(context([item], discount_sensitivity=0.0), item)
    assert keen.parts["discount"] == pytest.approx(0.5)
    assert keen.contributions["discount"] == pytest.approx(3 * indifferent.contributions["discount"])
    assert keen.parts["distance"] == indifferent.parts["distance"]


def test_area_price_prefers_cell_supply_then_candidates() -> None:
    a = spa("a", 0.2, 40.0, cell="cellA")
    b = spa("b", 0.4, 80.0, cell="cellB")
    ctx = RankContext.build(LAT, LON, AT, [a, b], area_median_price={("cellA", "spa"): 50.0})
    assert area_price(ctx, a) == 50.0
    assert area_price(ctx, b) == pytest.approx(60.0)  # median of the candidates' prices
    assert area_price(ctx, Candidate("n", None, LAT, LON, price=5.0)) is None
    assert TransparentRanker().score_one(ctx, a).parts["price_vs_area"] == pytest.approx(0.2)


def test_total_is_the_sum_of_contributions_and_weights_are_configurable() -> None:
    item = spa("a", 0.6, 31.0, 50.0, views_24h=10, clicks_24h=2)
    ctx = context([item, spa("b", 1.0, 60.0)], category_affinity='{"spa": 1}', discount_sensitivity=0.3)
    scored = TransparentRanker().score_one(ctx, item)
    assert set(scored.parts) == set(PARTS) == set(scored.contributions)
    assert scored.score == pytest.approx(sum(scored.contributions.values()))
    only_distance = TransparentRanker(weights={p: 0.0 for p in PARTS} | {"distance": 2.0})
    assert only_distance.score_one(ctx, item).score == pytest.approx(2 * scored.parts["distance"])
    with pytest.raises(ValueError, match="unknown score parts"):
        TransparentRanker(weights={"vibes": 1.0})
    with pytest.raises(ValueError, match="distance_scale_km"):
        TransparentRanker(distance_scale_km=0)


def test_spa_lover_gets_the_close_cheap_discounted_spa_first() -> None:
    items = [
        spa("dear_far", 2.5, 120.0),
        spa("cheap_close", 0.4, 31.0, 50.0),
        spa("mid", 1.0, 60.0),
        spa("coffee", 0.2, 4.0, category="coffee"),
        spa("culture_later", 1.0, 20.0, category="culture", valid_from=T0 + 5 * HOUR, valid_to=T0 + 8 * HOUR),
    ]
    ctx = context(items, category_affinity='{"spa": 0.8, "coffee": 0.2}', discount_sensitivity=0.7)
    order = [s.item.item_id for s in TransparentRanker().rank(ctx, items)]
    assert order[0] == "cheap_close"
    assert order.index("mid") < order.index("dear_far")
    assert order[-1] == "culture_later"  # not liked, and hours away
    assert [s.item.item_id for s in TransparentRanker().rank(ctx, items, limit=2)] == order[:2]


def test_rank_breaks_ties_by_distance_then_id() -> None:
    ranker = TransparentRanker(weights={p: 0.0 for p in PARTS})  # every score ties at 0
    here = [Candidate(i, "spa", LAT, LON, price=10.0) for i in ("b", "a", "c")]
    far = Candidate("0", "spa", LAT + KM_LAT, LON, price=10.0)
    order = [s.item.item_id for s in ranker.rank(context([*here, far]), [here[0], far, here[2], here[1]])]
    assert order == ["a", "b", "c", "0"]


def test_context_build_counts_only_open_priced_peers_within_radius() -> None:
    items = [
        spa("open", 0.5, 30.0),
        spa("outside", 5.0, 20.0),
        spa("later", 0.5, 10.0, valid_from=T0 + HOUR),
        spa("unpriced", 0.5, None),
        spa("coffee", 0.5, 3.0, category="coffee"),
    ]
    ctx = context(items, radius_km=3.0)
    assert ctx.open_peers == {"spa": (("open", 30.0),), "coffee": (("coffee", 3.0),)}
    assert ctx.peer_median_price["spa"] == pytest.approx(20.0)  # all priced spa candidates
    with pytest.raises(ValueError, match="timezone-aware"):
        RankContext.build(LAT, LON, datetime(2026, 5, 1, 18), items)


def test_candidate_from_catalog_item_and_stats() -> None:
    item = CatalogItem(
        item_id="i1",
        business_id="b1",
        kind="offer",
        category="spa",
        title="Zen",
        text=None,
        lat=LAT,
        lon=LON,
        cell="c",
        price=30.0,
        original_price=40.0,
        currency="USD",
        valid_from=T0,
        valid_to=None,
        deleted=False,
        updated_ts=T0,
    )
    candidate = Candidate.from_catalog(item, {"view_count_24h": 12, "click_count_24h": 3})
    assert (candidate.item_id, candidate.business_id, candidate.title, candidate.currency) == (
        "i1",
        "b1",
        "Zen",
        "USD",
    )
    assert (candidate.views_24h, candidate.clicks_24h) == (12, 3)
    assert candidate.discount == pytest.approx(0.25)
    assert Candidate.from_catalog(item).views_24h is None


# -- reasons ---------------------------------------------------------------------------------------


def test_reason_reads_what_where_when() -> None:
    item = spa("z", 0.6, 31.0, 50.0)
    reason = TransparentRanker().score_one(context([item]), item).reason
    assert reason == "38 % off spa 0.6 km away (8 min walk), ends in 2 h"


def test_reason_without_discount_far_away_and_upcoming() -> None:
    item = spa("f", 4.0, 25.0, category="culture", valid_from=T0 + 45 * 60, valid_to=T0 + 3 * HOUR)
    reason = TransparentRanker().score_one(context([item], radius_km=5.0), item).reason
    assert reason == "culture 4.0 km away (16 min ride), starts in 45 min"


def test_reason_names_the_standout_when_strong() -> None:
    liked = spa("l", 0.3, 40.0)
    reason = TransparentRanker().score_one(context([liked], category_affinity='{"spa": 1}'), liked).reason
    assert reason.endswith(", matches your taste")
    # Without competitors, a price well under the area median is worth saying.
    cheap = spa("c", 0.3, 30.0, cell="cellA")
    ctx = RankContext.build(LAT, LON, AT, [cheap], area_median_price={("cellA", "spa"): 60.0})
    assert "50 % below the area's median price" in TransparentRanker().score_one(ctx, cheap).reason


@pytest.mark.parametrize(
    ("item_id", "expected"),
    [
        ("p31", "cheapest of 4 spas open within 2 km"),
        ("p45", "2nd cheapest of 4 spas open within 2 km"),
        ("p60", "3rd cheapest of 4 spas open within 2 km"),
        ("p90", "most expensive of 4 spas open within 2 km"),
    ],
)
def test_reason_compares_with_open_competitors(item_id: str, expected: str) -> None:
    items = [spa(f"p{p}", 0.3 + i * 0.3, float(p)) for i, p in enumerate((31, 45, 60, 90))]
    items.append(spa("outside", 2.5, 5.0))  # beyond the radius: not a competitor here
    items.append(spa("later", 0.5, 5.0, valid_from=T0 + HOUR))  # not open yet
    ctx = context(items, radius_km=2.0)
    scored = {s.item.item_id: s for s in TransparentRanker().rank(ctx, items)}
    assert scored[item_id].reason.endswith("; " + expected)
    assert "; " not in scored["later"].reason


def test_comparison_wording_for_two_ties_and_other_categories() -> None:
    ranker = TransparentRanker()
    pair = [spa("a", 0.2, 10.0), spa("b", 0.4, 12.0)]
    ctx = context(pair)
    assert ranker.comparison(ctx, pair[0], 0.2) == "cheaper of 2 spas open within 3 km"
    assert ranker.comparison(ctx, pair[1], 0.4) == "dearer of 2 spas open within 3 km"
    cups = [spa(f"c{i}", 0.1 * i, p, category="coffee") for i, p in enumerate((3.0, 3.0, 4.5, 2.5, 5.0))]
    ctx = context(cups, radius_km=2.5)
    assert ranker.comparison(ctx, cups[0], 0.0) == "joint 2nd cheapest of 5 coffee places open within 2.5 km"
    assert ranker.comparison(ctx, cups[3], 0.3) == "cheapest of 5 coffee places open within 2.5 km"
    alone = [spa("solo", 0.2, 10.0)]
    assert ranker.comparison(context(alone), alone[0], 0.2) is None
    assert TransparentRanker(compare_min=3).comparison(context(pair), pair[0], 0.2) is None


def test_comparison_counts_the_item_itself_even_if_the_context_missed_it() -> None:
    others = [spa("a", 0.2, 10.0), spa("b", 0.4, 12.0)]
    newcomer = spa("n", 0.3, 11.0)
    assert (
        TransparentRanker().comparison(context(others), newcomer, 0.3)
        == "2nd cheapest of 3 spas open within 3 km"
    )


def test_category_plurals() -> None:
    assert category_plural("spa") == "spas"
    assert category_plural("coffee") == "coffee places"
    assert category_plural("karaoke") == "karaoke offers"
    assert all(category_plural(c) != f"{c} offers" for c in CATEGORIES)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (101, "101st"),
    ],
)
def test_ordinal(n: int, text: str) -> None:
    assert ordinal(n) == text


@pytest.mark.parametrize(
    ("minutes", "text"),
    [
        (0.2, "1 min"),
        (25, "25 min"),
        (59, "59 min"),
        (60, "1 h"),
        (95, "1.5 h"),
        (120, "2 h"),
        (14 * 60, "14 h"),
        (3 * 1440, "3 days"),
    ],
)
def test_format_minutes(minutes: float, text: str) -> None:
    assert format_minutes(minutes) == text


def test_format_distance() -> None:
    assert format_distance(0.04) == "40 m away"
    assert format_distance(0.0) == "10 m away"
    assert format_distance(0.6) == "0.6 km away"
    assert format_distance(12.345) == "12.3 km away"


def test_scoring_is_pure() -> None:
    items = [spa("a", 0.4, 31.0, 50.0), spa("b", 1.0, 60.0)]
    ctx = context(items, category_affinity='{"spa": 1}')
    ranker = TransparentRanker()
    first = [(s.item.item_id, s.score, s.reason) for s in ranker.rank(ctx, items)]
    assert first == [(s.item.item_id, s.score, s.reason) for s in ranker.rank(ctx, items)]
    assert ctx == context(items, category_affinity='{"spa": 1}')
