"""Generate a complete event document from a few keys, locally (no external service).

A business gives a kind (offer, product, service, event, informative notice), a category, a place,
a time window, a price (a base price with a discount, or an original and a reduced price), optional
media links and a few keywords. :class:`DraftGenerator` turns that into the title, description,
tags, normalised category, prices, validity and H3 cell of an item document that the flow decodes
like any other (see :func:`build_document`).

Text comes from templates per kind and category, filled from the keys, and enriched with wording
learned from the platform's own best-performing items (:class:`PhraseBank`: sentences that many
businesses use and whose items were engaged with more than their category's average, shrunk
towards the average so that a phrase seen on three items cannot dominate).

A category the platform does not know ("Pottery workshop") maps to the nearest known category by
MiniLM embedding (:class:`CategoryResolver`); the label as given is kept in the document.

>>> from datetime import datetime, timezone
>>> keys = DraftKeys(kind="offer", category="Café", lat=40.73, lon=-73.99, business_id="b1",
...                  original_price=5.0, reduced_price=4.0, keywords=("latte",),
...                  valid_from=datetime(2026, 5, 1, 8, tzinfo=timezone.utc),
...                  valid_to=datetime(2026, 5, 1, 20, tzinfo=timezone.utc), business_name="Blue Bean")
>>> draft = DraftGenerator(encoder=None).generate(keys, now=datetime(2026, 5, 1, 7, tzinfo=timezone.utc),
...                                              item_id="it-1")
>>> draft.title, draft.category.category, draft.category.method, draft.collection
('20% off latte', 'coffee', 'synonym', 'offers')
>>> draft.document["price"], draft.document["original_price"], draft.discount
(4.0, 5.0, 0.2)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from kairos import geo
from kairos.schema import CATEGORIES, ENGAGEMENT_KINDS, ITEM_KINDS
from kairos.text_categories import LEXICON, category_from_text, fold, normalise_category
from online.moderation import MediaRef

#: Draft kind -> the event-store collection it is published to (kairos/collections.yaml maps
#: offers, events and services). Products are sold like offers; informative notices are listed
#: like (usually free) events. The draft kind itself travels in the document as ``item_kind``.
COLLECTION_OF_KIND = {
    "offer": "offers",
    "product": "offers",
    "service": "services",
    "event": "events",
    "informative": "events",
}
DRAFT_KINDS = tuple(COLLECTION_OF_KIND)
#: Kinds that may have no price at all (free entry, a notice).
PRICELESS_KINDS = ("event", "informative")
#: How long an item stays valid when the business gives no end.
DEFAULT_DURATION = {
    "offer": timedelta(hours=24),
    "product": timedelta(days=7),
    "service": timedelta(hours=1),
    "event": timedelta(hours=3),
    "informative": timedelta(days=1),
}
MAX_WINDOW = timedelta(days=90)
TITLE_MAX = 90
DESCRIPTION_MAX = 600

#: What an offer is about when the business gives no keywords.
DEFAULT_SUBJECTS = {
    "food": "the menu", "coffee": "coffee and pastries", "spa": "spa treatments", "fitness": "classes",
    "sport": "the match", "culture": "the show", "retail": "the collection", "services": "appointments",
}
#: One neutral line of category flavour, so a description reads like a listing, not a form.
CATEGORY_LINES = {
    "food": "Good food, close by.", "coffee": "Your coffee break, close by.", "spa": "Time to unwind.",
    "fitness": "Move with us.", "sport": "Catch the action live.", "culture": "A night of culture.",
    "retail": "Shop it while it lasts.", "services": "Done by a local pro.",
}


class DraftError(ValueError):
    """Keys that cannot make an event; ``field`` names the key to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class DraftKeys:
    """What a business gives to draft an event. Times are aware datetimes."""

    kind: str
    lat: float
    lon: float
    business_id: str
    category: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    base_price: float | None = None
    discount: float | None = None  # a fraction: 0.3 is 30 % off base_price
    original_price: float | None = None
    reduced_price: float | None = None
    price: float | None = None
    currency: str | None = None
    media: tuple[MediaRef, ...] = ()
    keywords: tuple[str, ...] = ()
    title: str | None = None  # the business's own title, used as given
    description: str | None = None  # the business's own description, used as given
    business_name: str | None = None
    timezone: str | None = None  # IANA name used to write times in the text; default UTC
    sku: str | None = None  # the business's own product reference (price history)


# ------------------------------------------------------------------------------------------------
# Pure pieces: prices, window, category, tags, text, document
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prices:
    price: float | None
    original_price: float | None

    @property
    def discount(self) -> float | None:
        if self.price is None or not self.original_price:
            return None
        return round(1.0 - self.price / self.original_price, 4)


def resolve_prices(
    kind: str,
    base_price: float | None = None,
    discount: float | None = None,
    original_price: float | None = None,
    reduced_price: float | None = None,
    price: float | None = None,
) -> Prices:
    """The (reduced) price and original price from whichever keys were given.

    >>> resolve_prices("offer", base_price=50.0, discount=0.3)
    Prices(price=35.0, original_price=50.0)
    >>> resolve_prices("offer", original_price=50.0, reduced_price=50.0)
    Prices(price=50.0, original_price=None)
    >>> resolve_prices("event")
    Prices(price=None, original_price=None)
    """
    for name, value in (("base_price", base_price), ("original_price", original_price),
                        ("reduced_price", reduced_price), ("price", price)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise DraftError(name, "must be a finite amount of 0 or more")
    if discount is not None and (not math.isfinite(discount) or not 0 <= discount < 1):
        raise DraftError("discount", "must be a fraction from 0 up to (not including) 1, e.g. 0.3 for 30 % off")
    styles = [name for name, given in (("base_price", base_price is not None),
                                       ("original_price/reduced_price",
                                        original_price is not None or reduced_price is not None),
                                       ("price", price is not None)) if given]
    if len(styles) > 1:
        raise DraftError(styles[1].split("/")[0], f"give one way of pricing, not {' and '.join(styles)}: "
                         "base_price (+ discount), or original_price + reduced_price, or price")
    if discount is not None and base_price is None:
        raise DraftError("discount", "applies to base_price; give base_price too")
    if base_price is not None:
        if not discount:
            return Prices(round(base_price, 2), None)
        return Prices(round(base_price * (1 - discount), 2), round(base_price, 2))
    if original_price is not None or reduced_price is not None:
        if original_price is None:
            raise DraftError("original_price", "is required with reduced_price")
        if reduced_price is None:
            raise DraftError("reduced_price", "is required with original_price")
        if reduced_price > original_price:
            raise DraftError("reduced_price", f"{reduced_price:g} is above original_price {original_price:g}")
        if reduced_price == original_price:
            return Prices(round(reduced_price, 2), None)
        return Prices(round(reduced_price, 2), round(original_price, 2))
    if price is not None:
        return Prices(round(price, 2), None)
    if kind in PRICELESS_KINDS:
        return Prices(None, None)
    raise DraftError("price", f"kind {kind!r} needs a price: base_price (+ discount), original_price + "
                     "reduced_price, or price")


def resolve_window(
    kind: str, valid_from: datetime | None, valid_to: datetime | None, now: datetime
) -> tuple[datetime, datetime, datetime | None]:
    """(valid_from, valid_to, starts_at) with defaults per kind; events and services start at
    ``valid_from``.

    >>> now = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
    >>> start, end, starts_at = resolve_window("event", now + timedelta(hours=6), None, now)
    >>> (end - start).total_seconds() / 3600, starts_at == start
    (3.0, True)
    """
    # The document carries whole seconds (``_iso``): check the window it will really have, or an
    # end a fraction of a second after ``now`` passes here and decodes as already over.
    start = (_utc(valid_from) if valid_from is not None else now).replace(microsecond=0)
    end = (_utc(valid_to) if valid_to is not None else start + DEFAULT_DURATION[kind]).replace(microsecond=0)
    if end <= start:
        raise DraftError("valid_to", f"must be after valid_from ({start.isoformat()})")
    if end <= now:
        raise DraftError("valid_to", f"{end.isoformat()} is in the past")
    if end - start > MAX_WINDOW:
        raise DraftError("valid_to", f"the window is longer than {MAX_WINDOW.days} days")
    if start > now + timedelta(days=365):
        raise DraftError("valid_from", "is more than a year ahead")
    starts_at = start if kind in ("event", "service") else None
    return start, end, starts_at


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@dataclass(frozen=True, slots=True)
class CategoryChoice:
    """The normalised category and how it was found."""

    category: str
    given: str | None
    #: ``known`` (exact), ``synonym`` (lexicon), ``keywords`` (from the keywords), ``embedding``
    #: (nearest known category by MiniLM similarity), ``default`` (nothing to go on).
    method: str
    similarity: float | None = None


class CategoryResolver:
    """Maps any label onto :data:`kairos.schema.CATEGORIES`: the lexicon first, then the nearest
    category by embedding (each category's prototype is the mean embedding of its name and its
    lexicon words).

    >>> CategoryResolver(encoder=None).resolve("Beauty Salon", ()).category
    'spa'
    """

    def __init__(self, encoder: Any, categories: Sequence[str] = CATEGORIES,
                 words_per_category: int | None = None) -> None:
        self.encoder = encoder
        self.categories = tuple(categories)
        self.words_per_category = words_per_category
        self._prototypes: np.ndarray | None = None

    def prototypes(self) -> np.ndarray:
        if self._prototypes is None:
            rows = []
            for category in self.categories:
                words = [category, *LEXICON.get(category, ())[: self.words_per_category]]
                mean = self.encoder.encode(words).mean(axis=0)
                rows.append(mean / (np.linalg.norm(mean) or 1.0))
            self._prototypes = np.stack(rows).astype(np.float32)
        return self._prototypes

    def resolve(self, raw: str | None, keywords: Sequence[str]) -> CategoryChoice:
        given = raw.strip() if isinstance(raw, str) and raw.strip() else None
        if given is not None:
            normalised = normalise_category(given)
            if normalised in self.categories:
                method = "known" if fold(given) == normalised else "synonym"
                return CategoryChoice(normalised, given, method)
        from_keywords = category_from_text(" ".join(keywords)) if keywords else None
        if given is None and from_keywords in self.categories:
            return CategoryChoice(from_keywords, None, "keywords")
        probe = given or " ".join(keywords)
        if not probe or self.encoder is None:
            fallback = from_keywords if from_keywords in self.categories else "services"
            return CategoryChoice(fallback, given, "keywords" if from_keywords else "default")
        vector = self.encoder.encode([f"{probe} {' '.join(keywords)}".strip()])[0]
        sims = self.prototypes() @ vector
        best = int(np.argmax(sims))
        return CategoryChoice(self.categories[best], given, "embedding", round(float(sims[best]), 4))


def make_tags(keywords: Sequence[str], category: str, kind: str, discount: float | None,
              price: float | None, given_category: str | None = None, limit: int = 10) -> list[str]:
    """Folded, de-duplicated tags: the keywords, the category, the kind and what the deal is.

    >>> make_tags(["Latte", "latte ", "Pastry"], "coffee", "offer", 0.2, 4.0)
    ['latte', 'pastry', 'coffee', 'offer', 'deal']
    """
    tags: list[str] = []
    candidates = [*keywords, category, kind]
    if given_category and fold(given_category) != category:
        candidates.append(given_category)
    if discount:
        candidates.append("deal")
    if price == 0:
        candidates.append("free")
    for candidate in candidates:
        tag = fold(candidate)
        if tag and tag not in tags:
            tags.append(tag)
    return tags[:limit]


def _subject(keywords: Sequence[str], category: str, kind: str) -> str:
    words = [k.strip() for k in keywords if k.strip()]
    if not words:
        return "community notice" if kind == "informative" else DEFAULT_SUBJECTS.get(category, category)
    picked = words[:3]
    return picked[0] if len(picked) == 1 else f"{', '.join(picked[:-1])} & {picked[-1]}"


def _money(amount: float | None, currency: str) -> str:
    if amount is None:
        return ""
    text = f"{amount:,.0f}" if amount == int(amount) and amount >= 100 else f"{amount:,.2f}"
    return f"{text} {currency}"


def _when(moment: datetime, zone: ZoneInfo | None) -> str:
    local = moment.astimezone(zone or timezone.utc)
    text = f"{local:%a} {local.day} {local:%b} {local:%H:%M}"
    return text if zone is not None else f"{text} UTC"


def _span(start: datetime, end: datetime, zone: ZoneInfo | None) -> str:
    """"from Fri 1 May 08:00 to 20:00" within a day, else both dates in full."""
    local_start, local_end = start.astimezone(zone or timezone.utc), end.astimezone(zone or timezone.utc)
    if local_start.date() == local_end.date():
        suffix = "" if zone is not None else " UTC"
        return f"from {_when(start, zone).removesuffix(suffix) if suffix else _when(start, zone)} to " \
               f"{local_end:%H:%M}{suffix}"
    return f"from {_when(start, zone)} to {_when(end, zone)}"


def _clip(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True, slots=True)
class WrittenText:
    title: str
    description: str
    template: str
    learned_phrases: tuple[str, ...]


def write_text(
    kind: str,
    category: str,
    keywords: Sequence[str],
    prices: Prices,
    currency: str,
    valid_from: datetime,
    valid_to: datetime,
    *,
    business_name: str | None = None,
    zone: ZoneInfo | None = None,
    learned: Sequence[str] = (),
    own_title: str | None = None,
    own_description: str | None = None,
) -> WrittenText:
    """Title and description from the templates of ``kind`` and ``category``.

    >>> t = write_text("service", "spa", ["deep tissue massage"], Prices(60.0, None), "USD",
    ...                datetime(2026, 5, 1, 18, tzinfo=timezone.utc), datetime(2026, 5, 1, 19, tzinfo=timezone.utc),
    ...                business_name="Lotus Spa", learned=["Book ahead."])
    >>> t.title
    'Deep tissue massage · Fri 1 May 18:00 UTC'
    >>> t.description
    'Book deep tissue massage with Lotus Spa on Fri 1 May 18:00 UTC. Price: 60.00 USD. Time to unwind. Book ahead.'
    """
    subject = _subject(keywords, category, kind)
    pct = round((prices.discount or 0) * 100)
    price, original = _money(prices.price, currency), _money(prices.original_price, currency)
    start, span = _when(valid_from, zone), _span(valid_from, valid_to, zone)
    name = business_name or "us"
    free = prices.price == 0
    if kind == "offer":
        template = "offer.discount" if pct else "offer.plain"
        title = f"{pct}% off {subject}" if pct else f"{_capitalise(subject)} at {price}"
        body = f"{_capitalise(name) if business_name else 'We'} offer{'s' if business_name else ''} " \
               f"{f'{pct}% off ' if pct else ''}{subject}, {span}."
    elif kind == "product":
        template = "product.discount" if pct else "product.plain"
        title = f"{_capitalise(subject)}: {pct}% off, now {price}" if pct else f"{_capitalise(subject)}, {price}"
        body = f"{_capitalise(subject)} at {name}, available {span}."
    elif kind == "service":
        template = "service.discount" if pct else "service.plain"
        title = f"{_capitalise(subject)}, {pct}% off · {start}" if pct else f"{_capitalise(subject)} · {start}"
        body = f"Book {subject} with {name} on {start}."
    elif kind == "event":
        template = "event.free" if free else "event.discount" if pct else "event.plain"
        suffix = " (free entry)" if free else f" · {pct}% off tickets" if pct else ""
        title = f"{_capitalise(subject)} · {start}{suffix}"
        body = f"{_capitalise(name) if business_name else 'Join us for'}{' presents' if business_name else ''} " \
               f"{subject}, {span}."
    else:
        template = "informative"
        title = f"{_capitalise(subject)} · {start}"
        body = f"Notice{f' from {name}' if business_name else ''}: {subject}, {span}."
    if own_title:
        title, template = own_title, f"{template}+own_title"
    if own_description:
        body, template = own_description.strip(), f"{template}+own_description"
    sentences = [body]
    if prices.price is not None:
        if free:
            sentences.append("Free entry." if kind == "event" else "Free.")
        elif prices.original_price:
            sentences.append(f"Now {price} instead of {original}.")
        else:
            sentences.append(f"Price: {price}.")
    extra = [k.strip() for k in keywords[3:] if k.strip()]
    if extra:
        sentences.append(f"Also: {', '.join(extra)}.")
    if kind != "informative" and not own_description:
        sentences.append(CATEGORY_LINES.get(category, ""))
    sentences.extend(learned)
    description = " ".join(s for s in sentences if s)
    return WrittenText(_clip(title, TITLE_MAX), _clip(description, DESCRIPTION_MAX), template, tuple(learned))


def build_document(
    *,
    item_id: str,
    business_id: str,
    kind: str,
    title: str,
    description: str,
    category: CategoryChoice,
    tags: Sequence[str],
    prices: Prices,
    currency: str,
    lat: float,
    lon: float,
    valid_from: datetime,
    valid_to: datetime,
    starts_at: datetime | None,
    media: Sequence[MediaRef],
    keywords: Sequence[str],
    created_at: datetime,
    draft_id: str | None = None,
    sku: str | None = None,
) -> dict[str, Any]:
    """The item document as it is appended to the event store, in the "style A" shape that the
    ``offers``/``events``/``services`` mappings of ``kairos/collections.yaml`` decode."""
    document: dict[str, Any] = {
        "_id": item_id,
        "business_id": business_id,
        "title": title,
        "description": description,
        "category": category.category,
        "tags": list(tags),
        "currency": currency,
        "location": {"type": "Point", "coordinates": [lon, lat]},
        "starts": _iso(valid_from),
        "ends": _iso(valid_to),
        "created_at": _iso(created_at),
        "item_kind": kind,
        "keywords": list(keywords),
        "source": "kairos-draft",
    }
    if prices.price is not None:
        document["price"] = prices.price
    if prices.original_price is not None:
        document["original_price"] = prices.original_price
    if starts_at is not None:
        document["event_start"] = _iso(starts_at)
    if media:
        document["media"] = [m.url for m in media]
        document["media_meta"] = [
            {k: v for k, v in (("url", m.url), ("content_type", m.content_type), ("size_bytes", m.size_bytes))
             if v is not None}
            for m in media
        ]
    if category.given is not None:
        document["category_label"] = category.given
    if draft_id is not None:
        document["draft_id"] = draft_id
    if sku is not None:
        document["sku"] = sku
    return document


def _iso(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------
# Learned wording
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """An item's text and how users engaged with it (from the offline log)."""

    item_id: str
    business_id: str
    category: str | None
    kind: str
    text: str
    views: int
    engagements: int  # clicks, saves, purchases and bookings


def item_outcomes(events: Any) -> list[ItemOutcome]:
    """Per item: latest text and engagement counts, from an offline-log events frame
    (:meth:`kairos.stores.offline_log.OfflineLog.read_events`)."""
    if events is None or len(events) == 0:
        return []
    items = events[events["kind"].isin(ITEM_KINDS) & events["item_id"].notna()]
    items = items[items["text"].notna()].sort_values("ts")
    latest = items.groupby("item_id").tail(1).set_index("item_id")
    behaviour = events[events["kind"].isin(ENGAGEMENT_KINDS) & events["item_id"].isin(latest.index)]
    views = behaviour[behaviour["kind"] == "view"].groupby("item_id").size()
    engaged = behaviour[behaviour["kind"] != "view"].groupby("item_id").size()
    out = []
    for item_id, row in latest.iterrows():
        out.append(ItemOutcome(
            item_id=str(item_id), business_id=str(row["actor_id"]),
            category=row["category"] if isinstance(row["category"], str) else None, kind=str(row["kind"]),
            text=str(row["text"]), views=int(views.get(item_id, 0)), engagements=int(engaged.get(item_id, 0)),
        ))
    return out


@dataclass(frozen=True, slots=True)
class LearnedPhrase:
    phrase: str
    lift: float  # smoothed engagement rate of items using it / the category's rate
    items: int
    businesses: int


_SENTENCE = re.compile(r"[^.!?]+[.!?]")


def candidate_phrases(text: str, min_words: int = 2, max_words: int = 6) -> list[str]:
    """Short sentences of an item's description that could be reused by others: no digits, no
    prices, a handful of words ("Walk-ins welcome.", "Book ahead.").

    >>> candidate_phrases("20% off lattes — Blue Bean, Midtown. Walk-ins welcome. Now 4 USD.")
    ['Walk-ins welcome.']
    """
    description = text.split(" — ", 1)[1] if " — " in text else text
    out = []
    for match in _SENTENCE.finditer(description):
        sentence = match.group(0).strip()
        words = sentence.split()
        if not min_words <= len(words) <= max_words or re.search(r"\d", sentence) or "," in sentence:
            continue
        out.append(sentence)
    return out


class PhraseBank:
    """Wording that sells, learned from the platform's own items and their engagement.

    Each item contributes its candidate phrases with its views and engagements. A phrase's rate is
    ``(engagements + prior_views * category_rate) / (views + prior_views)``: shrunk towards the
    category's rate, so only phrases with real evidence rise. A phrase must be used by at least
    ``min_businesses`` businesses, which also keeps one shop's name and address out of everyone
    else's text. :meth:`best` returns phrases that beat their category.

    >>> bank = PhraseBank(min_businesses=2, prior_views=10)
    >>> for i, (note, engaged) in enumerate([("Book ahead.", 30), ("Book ahead.", 28), ("Walk in.", 5),
    ...                                      ("Walk in.", 4)]):
    ...     bank.learn_one(ItemOutcome(f"i{i}", f"b{i}", "spa", "offer", f"Facial — {note}", 100, engaged))
    >>> [p.phrase for p in bank.best("spa")]
    ['Book ahead.']
    """

    def __init__(self, min_businesses: int = 3, prior_views: float = 50.0, min_words: int = 2,
                 max_words: int = 6) -> None:
        self.min_businesses = min_businesses
        self.prior_views = prior_views
        self.min_words = min_words
        self.max_words = max_words
        self._phrases: dict[tuple[str, str], dict[str, Any]] = {}
        self._categories: dict[str, list[int]] = {}
        self.items_seen = 0

    def learn_one(self, outcome: ItemOutcome) -> None:
        category = outcome.category or ""
        totals = self._categories.setdefault(category, [0, 0])
        totals[0] += outcome.views
        totals[1] += outcome.engagements
        self.items_seen += 1
        for phrase in set(candidate_phrases(outcome.text, self.min_words, self.max_words)):
            key = (category, fold(phrase))
            stats = self._phrases.setdefault(key, {"phrase": phrase, "views": 0, "engagements": 0, "items": 0,
                                                   "businesses": set()})
            stats["views"] += outcome.views
            stats["engagements"] += outcome.engagements
            stats["items"] += 1
            stats["businesses"].add(outcome.business_id)

    def learn_many(self, outcomes: Iterable[ItemOutcome]) -> PhraseBank:
        for outcome in outcomes:
            self.learn_one(outcome)
        return self

    def best(self, category: str, n: int = 1) -> list[LearnedPhrase]:
        views, engagements = self._categories.get(category, (0, 0))
        if views <= 0:
            return []
        base = engagements / views
        if base <= 0:
            return []
        ranked = []
        for (phrase_category, _), stats in self._phrases.items():
            if phrase_category != category or len(stats["businesses"]) < self.min_businesses:
                continue
            rate = (stats["engagements"] + self.prior_views * base) / (stats["views"] + self.prior_views)
            lift = rate / base
            if lift > 1.0:
                ranked.append(LearnedPhrase(stats["phrase"], round(lift, 4), stats["items"],
                                            len(stats["businesses"])))
        ranked.sort(key=lambda p: (-p.lift, p.phrase))
        return ranked[:n]


# ------------------------------------------------------------------------------------------------
# The generator
# ------------------------------------------------------------------------------------------------


@dataclass
class GeneratedDraft:
    """A complete event built from keys: the document to publish plus what moderation needs."""

    item_id: str
    collection: str
    kind: str
    business_id: str
    title: str
    description: str
    tags: list[str]
    category: CategoryChoice
    prices: Prices
    currency: str
    valid_from: datetime
    valid_to: datetime
    starts_at: datetime | None
    lat: float
    lon: float
    cell: str
    media: tuple[MediaRef, ...]
    keywords: tuple[str, ...]
    template: str
    learned_phrases: tuple[str, ...]
    document: dict[str, Any]
    #: The words the business typed itself (moderated for spam; counted for copy detection).
    business_text: str
    sku: str | None = None
    #: Embedding of :attr:`text` (duplicates, price history).
    vector: np.ndarray | None = field(default=None, repr=False)
    #: Embedding of the business's own words (the text classifier); None when there are none.
    text_vector: np.ndarray | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """The text as the decoder will build it: ``title — description``."""
        return f"{self.title} — {self.description}"

    @property
    def discount(self) -> float | None:
        return self.prices.discount


class DraftGenerator:
    """Keys in, complete event out. Pure apart from the encoder (category embedding and the draft's
    own embedding, used by moderation) and the optional :class:`PhraseBank`."""

    def __init__(self, encoder: Any, phrase_bank: PhraseBank | None = None, h3_resolution: int = 8,
                 default_currency: str = "USD", learned_per_draft: int = 1) -> None:
        self.encoder = encoder
        self.phrase_bank = phrase_bank
        self.h3_resolution = h3_resolution
        self.default_currency = default_currency
        self.learned_per_draft = learned_per_draft
        self.categories = CategoryResolver(encoder)

    def generate(self, keys: DraftKeys, now: datetime, item_id: str, draft_id: str | None = None,
                 currency: str | None = None, embed: bool = True) -> GeneratedDraft:
        """Raises :class:`DraftError` naming the key when the keys cannot make an event."""
        if keys.kind not in COLLECTION_OF_KIND:
            raise DraftError("kind", f"must be one of {', '.join(DRAFT_KINDS)}")
        if not geo.valid_point(keys.lat, keys.lon):
            raise DraftError("location", "is not a valid WGS84 point")
        zone = _zone(keys.timezone)
        keywords = tuple(k.strip() for k in keys.keywords if k and k.strip())
        if not keys.category and not keywords and not keys.title:
            raise DraftError("category", "give a category, keywords or a title")
        prices = resolve_prices(keys.kind, keys.base_price, keys.discount, keys.original_price,
                                keys.reduced_price, keys.price)
        valid_from, valid_to, starts_at = resolve_window(keys.kind, keys.valid_from, keys.valid_to, _utc(now))
        choice = self.categories.resolve(keys.category or keys.title, keywords)
        money = keys.currency or currency or self.default_currency
        learned = ()
        if self.phrase_bank is not None and not keys.description:
            learned = tuple(p.phrase for p in self.phrase_bank.best(choice.category, self.learned_per_draft))
        text = write_text(keys.kind, choice.category, keywords, prices, money, valid_from, valid_to,
                          business_name=keys.business_name, zone=zone, learned=learned,
                          own_title=keys.title, own_description=keys.description)
        tags = make_tags(keywords, choice.category, keys.kind, prices.discount, prices.price, choice.given)
        document = build_document(
            item_id=item_id, business_id=keys.business_id, kind=keys.kind, title=text.title,
            description=text.description, category=choice, tags=tags, prices=prices, currency=money,
            lat=keys.lat, lon=keys.lon, valid_from=valid_from, valid_to=valid_to, starts_at=starts_at,
            media=keys.media, keywords=keywords, created_at=now, draft_id=draft_id, sku=keys.sku,
        )
        business_text = "\n".join(p for p in (keys.title, keys.description, " ".join(keywords)) if p)
        draft = GeneratedDraft(
            item_id=item_id, collection=COLLECTION_OF_KIND[keys.kind], kind=keys.kind,
            business_id=keys.business_id, title=text.title, description=text.description, tags=tags,
            category=choice, prices=prices, currency=money, valid_from=valid_from, valid_to=valid_to,
            starts_at=starts_at, lat=keys.lat, lon=keys.lon,
            cell=geo.cell_of(keys.lat, keys.lon, self.h3_resolution), media=tuple(keys.media),
            keywords=keywords, template=text.template, learned_phrases=text.learned_phrases,
            document=document, business_text=business_text, sku=keys.sku,
        )
        if embed and self.encoder is not None:
            own_words = business_text.replace("\n", ". ")
            vectors = self.encoder.encode([draft.text, own_words] if own_words else [draft.text])
            draft.vector = vectors[0]
            draft.text_vector = vectors[1] if own_words else None
        return draft


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise DraftError("timezone", f"unknown time zone {name!r}; use an IANA name such as America/New_York") \
            from None


__all__ = [
    "COLLECTION_OF_KIND",
    "CategoryChoice",
    "CategoryResolver",
    "DRAFT_KINDS",
    "DraftError",
    "DraftGenerator",
    "DraftKeys",
    "GeneratedDraft",
    "ItemOutcome",
    "LearnedPhrase",
    "PhraseBank",
    "Prices",
    "build_document",
    "candidate_phrases",
    "item_outcomes",
    "make_tags",
    "resolve_prices",
    "resolve_window",
    "write_text",
]
