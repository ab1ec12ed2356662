"""Drafting events from keys: prices, windows, categories, text, learned wording, and documents
that the flow's decoder turns into the expected canonical events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kairos.decoding import decode, load_mappings
from kairos.geo import cell_of
from kairos.schema import CATEGORIES, DeadLetter, Event
from kairos.stores.event_store import SourceRecord
from online.event_drafts import (
    COLLECTION_OF_KIND,
    CategoryChoice,
    CategoryResolver,
    DraftError,
    DraftGenerator,
    DraftKeys,
    ItemOutcome,
    PhraseBank,
    Prices,
    candidate_phrases,
    item_outcomes,
    make_tags,
    resolve_prices,
    resolve_window,
    write_text,
)
from online.moderation import MediaRef

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LAT, LON = 40.7265, -73.9815
MAPPINGS = load_mappings()


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    from online.embeddings import shared_encoder

    return shared_encoder()


def keys(**changes: object) -> DraftKeys:
    values: dict[str, object] = {
        "kind": "offer", "lat": LAT, "lon": LON, "business_id": "b7", "category": "coffee",
        "original_price": 5.0, "reduced_price": 4.0, "keywords": ("latte", "pastry"),
        "valid_from": NOW, "valid_to": NOW + timedelta(hours=6), "business_name": "Blue Bean",
    }
    values.update(changes)
    return DraftKeys(**values)  # type: ignore[arg-type]


def generate(**changes: object):  # type: ignore[no-untyped-def]
    return DraftGenerator(encoder=None).generate(keys(**changes), now=NOW, item_id="it-1", draft_id="dr-1")


def decoded(collection: str, document: dict) -> Event:  # type: ignore[type-arg]
    result = decode(SourceRecord(collection, "9", "insert", document, NOW), MAPPINGS)
    assert not isinstance(result, DeadLetter), result
    return result


# -- prices ----------------------------------------------------------------------------------------


def test_prices_from_each_way_of_giving_them() -> None:
    assert resolve_prices("offer", base_price=50.0, discount=0.3) == Prices(35.0, 50.0)
    assert resolve_prices("offer", base_price=50.0) == Prices(50.0, None)
    assert resolve_prices("offer", base_price=50.0, discount=0.0) == Prices(50.0, None)
    assert resolve_prices("offer", original_price=80.0, reduced_price=60.0) == Prices(60.0, 80.0)
    assert resolve_prices("product", price=12.5) == Prices(12.5, None)
    assert resolve_prices("event") == Prices(None, None)
    assert resolve_prices("informative") == Prices(None, None)
    assert Prices(35.0, 50.0).discount == 0.3 and Prices(35.0, None).discount is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_price": 50.0, "price": 40.0}, "price"),
        ({"base_price": 50.0, "original_price": 60.0, "reduced_price": 40.0}, "original_price"),
        ({"discount": 0.2}, "discount"),
        ({"base_price": 50.0, "discount": 1.0}, "discount"),
        ({"original_price": 50.0, "reduced_price": 60.0}, "reduced_price"),
        ({"original_price": 50.0}, "reduced_price"),
        ({"reduced_price": 50.0}, "original_price"),
        ({"price": -1.0}, "price"),
        ({"price": float("inf")}, "price"),
        ({}, "price"),
    ],
)
def test_price_keys_that_cannot_make_an_offer(kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DraftError) as error:
        resolve_prices("offer", **kwargs)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


# -- validity --------------------------------------------------------------------------------------


def test_window_defaults_per_kind_and_start_times() -> None:
    start, end, starts_at = resolve_window("offer", None, None, NOW)
    assert (start, end - start, starts_at) == (NOW, timedelta(hours=24), None)
    start, end, starts_at = resolve_window("service", NOW + timedelta(hours=3), None, NOW)
    assert end - start == timedelta(hours=1) and starts_at == start
    start, end, starts_at = resolve_window("event", NOW + timedelta(hours=3), NOW + timedelta(hours=7), NOW)
    assert end - start == timedelta(hours=4) and starts_at == NOW + timedelta(hours=3)
    naive = datetime(2026, 5, 1, 14, 0)
    assert resolve_window("product", naive, None, NOW)[0] == naive.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("valid_from", "valid_to", "field", "words"),
    [
        (NOW + timedelta(hours=2), NOW + timedelta(hours=1), "valid_to", "after valid_from"),
        (NOW - timedelta(hours=5), NOW - timedelta(hours=1), "valid_to", "in the past"),
        (NOW, NOW + timedelta(days=91), "valid_to", "longer than 90 days"),
        (NOW + timedelta(days=400), None, "valid_from", "more than a year"),
        # Ends 36 ms after now, but documents carry whole seconds: it would decode as already over
        # (found by the property test below).
        (NOW - timedelta(seconds=3599.964), NOW + timedelta(seconds=0.036), "valid_to", "in the past"),
    ],
)
def test_windows_that_cannot_be(valid_from: datetime, valid_to: datetime | None, field: str, words: str) -> None:
    with pytest.raises(DraftError, match=words) as error:
        resolve_window("offer", valid_from, valid_to, NOW)
    assert error.value.field == field


# -- categories, tags, text ------------------------------------------------------------------------


def test_known_labels_and_keywords_map_without_the_encoder() -> None:
    resolver = CategoryResolver(encoder=None)
    assert resolver.resolve("spa", ()) == CategoryChoice("spa", "spa", "known")
    assert resolver.resolve("Beauty Salon", ()) == CategoryChoice("spa", "Beauty Salon", "synonym")
    assert resolver.resolve(None, ("espresso", "croissant")) == CategoryChoice("coffee", None, "keywords")
    assert resolver.resolve(None, ()).method == "default"


@pytest.mark.parametrize(
    ("label", "expected"),
    [("Bouldering", "fitness"), ("Karaoke bar", "culture"), ("Laundromat", "services"), ("Kebab house", "food"),
     ("Phone accessories", "retail")],
)
def test_new_labels_map_to_the_nearest_category_by_embedding(encoder, label: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    choice = CategoryResolver(encoder).resolve(label, ())
    assert choice.method == "embedding" and choice.given == label
    assert choice.category == expected
    assert choice.similarity is not None and 0 < choice.similarity <= 1


def test_tags_are_folded_and_deduplicated() -> None:
    assert make_tags(["Latté", "latte", " Pastry "], "coffee", "offer", 0.2, 4.0) == [
        "latte", "pastry", "coffee", "offer", "deal",
    ]
    assert make_tags([], "culture", "event", None, 0.0, "Karaoke bar") == ["culture", "event", "karaoke bar", "free"]


def test_text_per_kind() -> None:
    start, end = NOW + timedelta(hours=6), NOW + timedelta(hours=9)
    offer = write_text("offer", "coffee", ["latte", "pastry"], Prices(4.0, 5.0), "USD", NOW, NOW + timedelta(hours=6),
                       business_name="Blue Bean")
    assert offer.title == "20% off latte & pastry"
    assert "Now 4.00 USD instead of 5.00 USD." in offer.description
    assert offer.description.startswith("Blue Bean offers 20% off latte & pastry, from Fri 1 May 12:00 to 18:00 UTC.")
    free = write_text("event", "culture", ["jazz trio"], Prices(0.0, None), "USD", start, end)
    assert free.title == "Jazz trio · Fri 1 May 18:00 UTC (free entry)" and "Free entry." in free.description
    notice = write_text("informative", "services", ["road closure"], Prices(None, None), "USD", start, end)
    assert notice.title.startswith("Road closure") and "Price" not in notice.description
    product = write_text("product", "retail", ["linen shirts"], Prices(45.0, 60.0), "USD", NOW, end)
    assert product.title == "Linen shirts: 25% off, now 45.00 USD" and product.template == "product.discount"


def test_text_in_the_business_time_zone_and_own_words() -> None:
    from zoneinfo import ZoneInfo

    text = write_text("service", "spa", ["facial"], Prices(60.0, None), "USD", NOW, NOW + timedelta(hours=1),
                      zone=ZoneInfo("America/New_York"), own_title="Our famous facial",
                      own_description="Gentle and quick.", learned=["Book ahead."])
    assert text.title == "Our famous facial"
    assert text.description.startswith("Gentle and quick. Price: 60.00 USD.")
    assert "UTC" not in text.description and text.template == "service.plain+own_title+own_description"


def test_long_text_is_clipped() -> None:
    text = write_text("offer", "food", ["x" * 40] * 10, Prices(10.0, None), "USD", NOW, NOW + timedelta(hours=1))
    assert len(text.title) <= 90 and len(text.description) <= 600 and text.title.endswith("…")


# -- learned wording -------------------------------------------------------------------------------


def test_candidate_phrases_skip_names_numbers_and_long_sentences() -> None:
    text = "Deal — Blue Bean, Midtown. Walk-ins welcome. Now 4 USD. This sentence is far too long to reuse here."
    assert candidate_phrases(text) == ["Walk-ins welcome."]


def outcome(i: int, note: str, engaged: int, business: str | None = None, views: int = 100) -> ItemOutcome:
    return ItemOutcome(f"i{i}", business or f"b{i}", "spa", "offer", f"Facial — Shop {i}. {note}", views, engaged)


def test_phrase_bank_prefers_wording_of_well_engaged_items_from_many_businesses() -> None:
    bank = PhraseBank(min_businesses=3, prior_views=50)
    for i in range(4):
        bank.learn_one(outcome(i, "Book ahead.", 30))
        bank.learn_one(outcome(10 + i, "Walk in anytime.", 5))
    for i in range(2):  # one shop, great numbers: its wording is not everybody's
        bank.learn_one(outcome(20 + i, "Ask for Maria.", 60, business="solo"))
    best = bank.best("spa", n=3)
    assert [p.phrase for p in best] == ["Book ahead."]
    assert best[0].businesses == 4 and best[0].items == 4 and best[0].lift > 1
    assert bank.best("coffee") == []


def test_phrase_bank_shrinks_thin_evidence() -> None:
    bank = PhraseBank(min_businesses=2, prior_views=100)
    for i in range(20):
        bank.learn_one(outcome(i, "Plain words.", 10))
    bank.learn_one(outcome(100, "Lucky words.", 3, views=3))  # 100 % rate on three views
    bank.learn_one(outcome(101, "Lucky words.", 3, views=3))
    (lucky,) = bank.best("spa")
    assert 1.0 < lucky.lift < 1.6  # a raw rate of 1.0 against 0.1 would claim 10x


def test_item_outcomes_from_the_offline_log() -> None:
    def event(kind: str, item: str, actor: str, text: str | None = None, minutes: int = 0) -> dict:  # type: ignore[type-arg]
        actor_type = "business" if kind == "offer" else "user"
        return Event(f"e{kind}{item}{actor}{minutes}", NOW + timedelta(minutes=minutes), actor_type, actor,
                     kind, item_id=item, category="spa", text=text).to_row()

    rows = [
        event("offer", "i1", "b1", "Old title — Old words.", 0),
        event("offer", "i1", "b1", "Facial — Book ahead.", 5),  # the update wins
        event("view", "i1", "u1"), event("view", "i1", "u2"), event("click", "i1", "u1"),
        event("purchase", "i1", "u1"), event("search", "i1", "u3"),
        event("view", "gone", "u1"),  # an item never published: ignored
    ]
    (found,) = item_outcomes(pd.DataFrame(rows))
    assert found == ItemOutcome("i1", "b1", "spa", "offer", "Facial — Book ahead.", 2, 2)
    assert item_outcomes(pd.DataFrame()) == []


# -- the generator and the decoder -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["offer", "product", "service", "event", "informative"])
def test_published_document_decodes_into_the_expected_event(kind: str) -> None:
    priced = {"event": {"original_price": None, "reduced_price": None, "price": 25.0},
              "informative": {"original_price": None, "reduced_price": None}}.get(kind, {})
    draft = generate(kind=kind, media=(MediaRef("https://cdn.example.com/a.jpg", "image/jpeg", 1000),),
                     valid_from=NOW + timedelta(hours=2), valid_to=NOW + timedelta(hours=5), sku="sku-9", **priced)
    assert draft.collection == COLLECTION_OF_KIND[kind]
    event = decoded(draft.collection, draft.document)
    assert event.is_item and event.op == "create"
    assert event.kind == {"product": "offer", "informative": "event"}.get(kind, kind)
    assert (event.item_id, event.actor_id, event.category) == ("it-1", "b7", "coffee")
    assert (event.lat, event.lon, event.cell) == (LAT, LON, cell_of(LAT, LON, 8))
    assert (event.valid_from, event.valid_to) == (NOW + timedelta(hours=2), NOW + timedelta(hours=5))
    assert event.ts == NOW
    assert event.text == f"{draft.title} — {draft.description}" == draft.text
    assert event.price == draft.prices.price and event.original_price == draft.prices.original_price
    assert event.currency == "USD"
    assert event.attrs["item_kind"] == kind and event.attrs["tags"] == draft.tags
    assert event.attrs["media"] == ["https://cdn.example.com/a.jpg"] and event.attrs["sku"] == "sku-9"
    assert event.attrs["draft_id"] == "dr-1" and event.attrs["business_id"] == "b7"
    if kind in ("service", "event"):
        assert event.attrs["starts_at"] == (NOW + timedelta(hours=2)).isoformat()
    else:
        assert "starts_at" not in event.attrs
    if kind == "offer":
        assert (event.price, event.original_price, event.discount) == (4.0, 5.0, pytest.approx(0.2))


def test_generator_keys_errors() -> None:
    with pytest.raises(DraftError, match="kind"):
        generate(kind="party")
    with pytest.raises(DraftError, match="location"):
        generate(lat=91.0)
    with pytest.raises(DraftError, match="category, keywords or a title"):
        generate(category=None, keywords=())
    with pytest.raises(DraftError, match="time zone") as error:
        generate(timezone="Mars/Olympus")
    assert error.value.field == "timezone"


def test_generator_uses_learned_wording_unless_the_business_wrote_its_own() -> None:
    bank = PhraseBank(min_businesses=1, prior_views=1)
    bank.learn_one(ItemOutcome("x", "b1", "coffee", "offer", "Latte — Freshly ground today.", 100, 40))
    bank.learn_one(ItemOutcome("y", "b2", "coffee", "offer", "Latte — Plain.", 100, 1))
    generator = DraftGenerator(encoder=None, phrase_bank=bank)
    draft = generator.generate(keys(), now=NOW, item_id="it-2")
    assert draft.learned_phrases == ("Freshly ground today.",)
    assert draft.description.endswith("Freshly ground today.")
    own = generator.generate(keys(description="Our own words."), now=NOW, item_id="it-3")
    assert own.learned_phrases == () and own.description.startswith("Our own words.")


def test_generator_embeds_the_text_and_the_business_words(encoder) -> None:  # type: ignore[no-untyped-def]
    generator = DraftGenerator(encoder)
    draft = generator.generate(keys(title="Latte Tuesday"), now=NOW, item_id="it-4")
    assert draft.vector is not None and draft.vector.shape == (384,)
    assert draft.text_vector is not None
    assert abs(float(draft.text_vector @ encoder.encode_one("Latte Tuesday. latte pastry")) - 1) < 1e-4
    bare = generator.generate(keys(keywords=()), now=NOW, item_id="it-5")
    assert bare.business_text == "" and bare.text_vector is None


prices = st.one_of(
    st.fixed_dictionaries({"base_price": st.floats(0, 5000), "discount": st.none() | st.floats(0, 0.95)}),
    st.floats(0, 5000).flatmap(lambda o: st.fixed_dictionaries(
        {"original_price": st.just(o), "reduced_price": st.floats(0, o)})),
    st.fixed_dictionaries({"price": st.floats(0, 5000)}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(list(COLLECTION_OF_KIND)),
    category=st.none() | st.sampled_from([*CATEGORIES, "Café", "Pottery", "   "]),
    keywords=st.lists(st.text(min_size=1, max_size=12), max_size=4),
    lat=st.floats(-89.9, 89.9),
    lon=st.floats(-179.9, 179.9),
    start_h=st.floats(-2, 48),
    hours=st.none() | st.floats(0.1, 400),
    price_keys=prices,
)
def test_any_accepted_keys_make_a_decodable_item(kind, category, keywords, lat, lon, start_h, hours,  # type: ignore[no-untyped-def]
                                                 price_keys) -> None:
    start = NOW + timedelta(hours=start_h)
    values = {"original_price": None, "reduced_price": None, **price_keys}
    try:
        draft = DraftGenerator(encoder=None).generate(
            keys(kind=kind, category=category, keywords=tuple(keywords), lat=lat, lon=lon, valid_from=start,
                 valid_to=None if hours is None else start + timedelta(hours=hours), title="Title", **values),
            now=NOW, item_id="it-h")
    except DraftError:
        return  # refused with a field and a message: the API turns it into a 422
    event = decoded(draft.collection, draft.document)
    assert event.item_id == "it-h" and event.category in CATEGORIES
    assert event.valid_to is not None and event.valid_to > NOW
    assert event.price == draft.prices.price
