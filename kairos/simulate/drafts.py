"""A labelled set of event drafts for the moderation benchmark, from the simulated city.

The simulator's businesses and their item history (:func:`kairos.simulate.items.build_items`) give
the platform's past: what each business sells, at what prices, with what words. After that
history, businesses submit drafts (``POST /v1/events/draft`` bodies) of five classes:

* ``clean``: the businesses' next real items, as keys only, with their own title, or with their own
  title and description; some with new category labels, some with harmless words that look
  alarming ("killer burgers", "massage gun", "murder mystery dinner", "blood donation drive");
* ``spam``: contact details, links, money schemes, shouting, and subtler pitches with no marker;
* ``duplicate``: a business re-posting an item it still has live (copy-pasted old post with small
  edits, or the same keys as a draft it submitted earlier);
* ``prohibited``: drugs, weapons, counterfeits, wildlife products, adult services, violence and
  hate, written plainly, in leetspeak, or in paraphrases no lexicon lists;
* ``price_fraud``: an inflated "original" price, a discount the price history contradicts, an
  absurd discount, or a bait price far under the area's prices.

Same seed, same set. Nothing in the product imports this module.

>>> labelled = labelled_drafts(seed=3, n_drafts=60, n_businesses=24, history_days=6, draft_days=2)
>>> sorted(labelled.counts()) == sorted(CLASSES)
True
>>> all(d.keys["business_id"] for d in labelled.drafts)
True
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from kairos.simulate.items import Item, build_items, round_price
from kairos.simulate.model import CITIES
from kairos.simulate.world import DAY_S, HOUR_S, Business, build_businesses

CLASSES = ("clean", "spam", "duplicate", "prohibited", "price_fraud")
#: Share of each class among the drafts: most drafts on a marketplace are fine.
DEFAULT_SHARES = {"clean": 0.55, "spam": 0.12, "duplicate": 0.1, "prohibited": 0.13, "price_fraud": 0.1}
#: The moderation label a moderator gives each prohibited subtype.
PROHIBITED_LABELS = {"drugs": "prohibited", "weapons": "prohibited", "counterfeit": "prohibited",
                     "wildlife": "prohibited", "adult": "adult", "violence": "violence", "hate": "hate"}
START = datetime(2026, 3, 2, tzinfo=timezone.utc)
#: Share of clean drafts made from fresh keys rather than the simulator's next items.
FRESH_CLEAN_SHARE = 0.3

CLEAN_KEYWORDS: dict[str, tuple[str, ...]] = {
    "coffee": ("flat white", "oat milk latte", "croissant", "banana bread", "matcha latte", "cold brew",
               "chai latte", "cinnamon roll", "espresso tonic", "almond croissant", "pour over", "filter coffee"),
    "food": ("margherita pizza", "ramen bowl", "lunch thali", "tacos", "burger and fries", "vegan bowl",
             "sushi platter", "brunch set", "chicken biryani", "pasta night", "dim sum", "steak dinner"),
    "spa": ("hot stone massage", "aromatherapy", "gel manicure", "eyebrow threading", "deep tissue massage",
            "facial peel", "pedicure", "hair spa", "body scrub", "head massage"),
    "fitness": ("vinyasa yoga", "spin class", "pilates reformer", "hiit circuit", "boxing fitness",
                "kettlebell class", "open gym pass", "stretching class", "barre class"),
    "sport": ("football screening", "cricket watch party", "five-a-side match", "basketball game",
              "tennis clinic", "darts night", "boxing match"),
    "culture": ("jazz trio", "stand-up comedy", "poetry slam", "gallery opening", "indie film screening",
                "theatre workshop", "open mic", "classical recital"),
    "retail": ("linen shirts", "running shoes", "vintage denim", "handmade jewellery", "kids books",
               "leather wallets", "ceramic mugs", "summer dresses"),
    "services": ("phone screen repair", "deep cleaning", "shirt alterations", "laptop repair", "shoe repair",
                 "bike tune-up", "key cutting", "ironing service"),
}
#: Harmless wording that looks alarming to a naive filter.
TRICKY_CLEAN: dict[str, tuple[str, ...]] = {
    "food": ("killer burgers", "death by chocolate cake", "bomb pop desserts", "to die for brunch"),
    "coffee": ("double shot espresso", "killer cold brew"),
    "spa": ("massage gun session", "hair colour bomb"),
    "fitness": ("fight fit bootcamp", "boxing class", "kickboxing basics"),
    "sport": ("penalty shootout final", "boxing match screening"),
    "culture": ("murder mystery dinner", "Top Gun screening", "crime fiction night"),
    "retail": ("glue gun craft kit", "gun metal watch straps"),
    "services": ("weed control", "pest control"),
}
#: Community notices (informative kind, free).
NOTICES = ("blood donation drive", "street fair", "road closure on Main Street", "free flu shots",
           "neighbourhood clean-up", "lost dog found near the park", "farmers market", "library book swap")
#: New category labels and the category they belong to (checks the embedding fallback).
NEW_LABELS = {"Karaoke bar": "culture", "Escape room": "culture", "Bouldering": "fitness",
              "Climbing wall": "fitness", "Dog grooming": "services", "Laundromat": "services",
              "Phone accessories": "retail", "Vinyl records": "retail", "Padel club": "sport",
              "Bowling alley": "sport", "Kebab house": "food", "Ice cream parlour": "food", "Juice bar": "coffee",
              "Nail art studio": "spa"}

SPAM = {
    "contact": ("WhatsApp {phone} for details", "text {phone} now", "DM me on telegram @{handle}",
                "call now {phone}", "message me on whatsapp for the price list"),
    "link": ("visit {word}{n}.com for the deal", "full menu at www.{word}{n}.com", "bit.ly/{code} for the offer",
             "order at https://{word}-deals.xyz/{code}"),
    "scheme": ("earn $500 a day from home", "double your money with crypto", "bitcoin investment opportunity",
               "instant loan approval, no credit check", "make money fast", "casino bonus, free spins",
               "you have won a cash prize", "buy followers and likes cheap", "forex signals, passive income",
               "miracle cure for hair loss", "lose weight fast with our tea"),
    "shouting": ("BEST DEAL EVER BUY NOW!!!", "LIMITED TIME ONLY ACT NOW!!!", "CLICK HERE FOR FREE STUFF!!!",
                 "HUGE SALE HUGE SALE HUGE SALE HUGE SALE"),
    "subtle": ("grow your social media audience overnight", "credit score fixed in days",
               "remote job opening, weekly pay, no experience", "essay writing service, any subject",
               "get a verified badge on instagram", "sell your old gold for instant cash",
               "love problem solution by astrology expert", "become a brand ambassador and get paid"),
}
PROHIBITED = {
    "drugs": ("weed delivery", "thc gummies", "c0caine", "molly pills", "xanax no prescription",
              "magic mushrooms", "420 friendly edibles", "party favours, snow, delivered discreetly",
              "lean syrup and purple drank", "pharmacy pills, no questions asked"),
    "weapons": ("glock 19 for sale", "ammo bulk deal", "ghost gun kit", "unregistered pistols", "ar-15 parts",
                "tactical hardware, no license needed", "switchblades and brass knuckles"),
    "counterfeit": ("replica rolex", "fake id cards", "counterfeit sneakers", "first copy designer bags",
                    "fake passports", "mirror quality designer handbags, same as original"),
    "wildlife": ("ivory carvings", "rhino horn powder", "pangolin scales, exotic remedy"),
    "adult": ("happy ending massage", "escort service", "erotic massage", "nude spa night", "xxx show",
              "body to body massage", "discreet companionship for gentlemen",
              "late night private massage, men only, extras available"),
    "violence": ("bare knuckle street fight", "we will kill them all", "dog fight betting", "cockfight night",
                 "gore video screening", "come and beat up the rival fans"),
    "hate": ("no immigrants allowed", "whites only party", "muslims not welcome", "race war rally",
             "keep foreigners out of our neighbourhood"),
}
_FILLERS = ("Today only.", "Limited places.", "Come early.", "All welcome.", "Book ahead.", "While stocks last.")
_NUMBERS = re.compile(r"\d+")
_STOP = {"off", "all", "the", "and", "with", "any", "for", "a", "of", "to", "+", "&", "vs", "2-for-1", "deal"}


@dataclass(frozen=True)
class HistoryItem:
    """An item already on the platform before the drafts (times in epoch seconds)."""

    item_id: str
    business_id: str
    kind: str
    category: str
    text: str
    price: float
    original_price: float | None
    currency: str
    lat: float
    lon: float
    created: float
    valid_from: float
    valid_to: float
    starts_at: float | None


@dataclass
class LabelledDraft:
    ts: float
    label: str  # one of CLASSES
    subtype: str
    keys: dict[str, Any]  # a POST /v1/events/draft body (times as ISO-8601 text)
    draft_id: str = ""
    duplicate_of: str | None = None
    #: For clean drafts with a new label: the category it should map to.
    expected_category: str | None = None
    #: The moderation label a moderator would give it (``ok`` for clean).
    moderation_label: str = "ok"


@dataclass
class LabelledSet:
    history: list[HistoryItem]
    drafts: list[LabelledDraft]
    start: float  # drafts start here; history is before
    end: float
    businesses: dict[str, Business] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return dict(Counter(d.label for d in self.drafts))


def labelled_drafts(
    seed: int = 7,
    n_drafts: int = 1000,
    shares: dict[str, float] | None = None,
    n_businesses: int = 60,
    history_days: int = 14,
    draft_days: int = 7,
) -> LabelledSet:
    """A seeded labelled set: history items, then ``n_drafts`` drafts in time order."""
    shares = dict(shares or DEFAULT_SHARES)
    if set(shares) != set(CLASSES) or any(v < 0 for v in shares.values()) or not sum(shares.values()):
        raise ValueError(f"shares must give a non-negative share for each of {CLASSES}")
    rng = np.random.default_rng(seed)
    start = START.timestamp()
    cut = start + history_days * DAY_S
    end = cut + draft_days * DAY_S
    businesses = build_businesses(rng, n_businesses, 0.15, start)
    items = sorted(build_items(rng, businesses, start, end), key=lambda i: i.created)
    past = [i for i in items if i.created < cut]
    future = [i for i in items if cut <= i.created < end]
    history = [_history(i) for i in past]
    total = sum(shares.values())
    wanted = {c: int(round(n_drafts * shares[c] / total)) for c in CLASSES}
    wanted["clean"] += n_drafts - sum(wanted.values())
    maker = _Maker(rng, businesses, history, cut, end)
    drafts: list[LabelledDraft] = []
    drafts += maker.clean(future, wanted["clean"], past)
    drafts += [maker.spam() for _ in range(wanted["spam"])]
    drafts += [maker.prohibited() for _ in range(wanted["prohibited"])]
    drafts += [maker.price_fraud() for _ in range(wanted["price_fraud"])]
    drafts.sort(key=lambda d: d.ts)
    for index, draft in enumerate(drafts):
        draft.draft_id = f"ld-{index:05d}"
    drafts = maker.add_duplicates(drafts, wanted["duplicate"])
    for index, draft in enumerate(drafts):
        draft.draft_id = draft.draft_id or f"ld-{index:05d}-dup"
    return LabelledSet(history, drafts, cut, end, {b.id: b for b in businesses})


def _history(item: Item) -> HistoryItem:
    return HistoryItem(
        item_id=item.id, business_id=item.business.id, kind=item.kind, category=item.category,
        text=f"{item.title} — {item.description}", price=item.price, original_price=item.original_price,
        currency=item.currency, lat=item.business.lat, lon=item.business.lon, created=item.created,
        valid_from=item.valid_from, valid_to=item.valid_to, starts_at=item.starts_at,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _keywords_of(title: str) -> list[str]:
    words = [w.strip(".,:!") for w in title.lower().split()]
    return [w for w in words if w and w not in _STOP and not any(ch.isdigit() for ch in w)][:3]


class _Maker:
    def __init__(self, rng: np.random.Generator, businesses: list[Business], history: list[HistoryItem],
                 start: float, end: float) -> None:
        self.rng = rng
        self.businesses = businesses
        self.history = history
        self.start, self.end = start, end
        self.by_business: dict[str, list[HistoryItem]] = {}
        for item in history:
            self.by_business.setdefault(item.business_id, []).append(item)

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def business(self) -> Business:
        return self.businesses[int(self.rng.integers(len(self.businesses)))]

    def base_keys(self, business: Business, ts: float, kind: str | None = None) -> dict[str, Any]:
        """Plausible keys for a business at a time: its kind, category label, place, a normal price."""
        rng = self.rng
        kind = kind or self.kind_for(business)
        currency = CITIES[business.city].currency
        base = self.usual_price(business)
        hours = float(rng.choice([3, 6, 12, 24]))
        valid_from = ts + (float(rng.uniform(1.0, 20.0)) * HOUR_S if kind in ("event", "service") else 0.0)
        keys: dict[str, Any] = {
            "business_id": business.id, "kind": kind, "category": business.label,
            "location": {"lat": business.lat, "lon": business.lon}, "valid_from": _iso(valid_from),
            "valid_to": _iso(valid_from + (hours if kind in ("offer", "product") else 2.0) * HOUR_S),
            "currency": currency, "business_name": business.name,
        }
        if rng.random() < 0.5:
            keys["original_price"] = base
            keys["reduced_price"] = round_price(base * (1 - float(rng.choice([0.1, 0.2, 0.3]))), currency)
        else:
            keys["price"] = base
        if rng.random() < 0.4:
            keys["media"] = [{"url": f"https://cdn.example.com/{business.id}/{int(rng.integers(1e6))}.jpg",
                              "content_type": "image/jpeg", "size_bytes": int(rng.integers(50_000, 2_000_000))}]
        return keys

    def kind_for(self, business: Business) -> str:
        if business.category in ("sport", "culture"):
            return "event"
        if business.category in ("spa", "fitness", "services"):
            return "service" if self.rng.random() < 0.6 else "offer"
        return "product" if business.category == "retail" and self.rng.random() < 0.5 else "offer"

    def usual_price(self, business: Business) -> float:
        prices = [i.original_price or i.price for i in self.by_business.get(business.id, []) if i.price > 0]
        if prices:
            return float(np.median(prices))
        from kairos.simulate.model import BASE_PRICES

        currency = CITIES[business.city].currency
        return round_price(BASE_PRICES[business.city][business.category] * business.price_level, currency)

    def when(self) -> float:
        return float(self.rng.uniform(self.start, self.end - 6 * HOUR_S))

    # ---- classes ----

    def clean(self, future: list[Item], count: int, earlier: list[Item]) -> list[LabelledDraft]:
        rng = self.rng
        drafts = []
        seen = list(earlier)
        fresh = []
        for item in future:
            if not _collides(item, seen):
                fresh.append(item)
            seen.append(item)
        future = fresh
        # Most clean drafts are the businesses' next real items; the rest are fresh keys that
        # exercise notices, harmless-but-alarming words and new category labels.
        from_items = min(len(future), int(round(count * (1 - FRESH_CLEAN_SHARE))))
        picked = [future[int(i)] for i in sorted(rng.choice(len(future), size=from_items, replace=False))]
        for item in picked:
            drafts.append(self.clean_from_item(item))
        while len(drafts) < count:  # more than the simulator's future holds: fresh keys-only drafts
            drafts.append(self.clean_fresh())
        return drafts

    def clean_from_item(self, item: Item) -> LabelledDraft:
        rng = self.rng
        business = item.business
        keys = self.base_keys(business, item.created, kind=item.kind)
        keys["valid_from"], keys["valid_to"] = _iso(item.valid_from), _iso(max(item.valid_to, item.created + HOUR_S))
        if item.starts_at is not None:
            keys["valid_from"] = _iso(item.starts_at)
            keys["valid_to"] = _iso(item.starts_at + (2 * HOUR_S if item.kind == "event" else HOUR_S))
        for key in ("price", "original_price", "reduced_price"):
            keys.pop(key, None)
        if item.original_price:
            keys["original_price"], keys["reduced_price"] = item.original_price, item.price
        else:
            keys["price"] = item.price
        style = rng.random()
        subtype = "keys"
        if style < 0.4:
            keys["keywords"] = _keywords_of(item.title) or [self.pick(CLEAN_KEYWORDS[item.category])]
        elif style < 0.75:
            keys["title"], keys["keywords"], subtype = item.title, _keywords_of(item.title), "own_title"
        else:
            keys["title"], keys["description"], subtype = item.title, item.description, "own_text"
        return LabelledDraft(item.created, "clean", subtype, keys)

    def clean_fresh(self) -> LabelledDraft:
        rng = self.rng
        business = self.business()
        ts = self.when()
        roll = rng.random()
        expected = None
        if roll < 0.12:
            keys = self.base_keys(business, ts, kind="informative")
            for key in ("price", "original_price", "reduced_price"):
                keys.pop(key, None)
            keys["keywords"] = [self.pick(NOTICES)]
            keys.pop("category")
            subtype = "notice"
        else:
            keys = self.base_keys(business, ts)
            pool = TRICKY_CLEAN if roll < 0.45 else CLEAN_KEYWORDS
            words = list(pool[business.category])
            keys["keywords"] = [words[int(i)] for i in rng.choice(len(words), size=min(2, len(words)), replace=False)]
            subtype = "tricky" if roll < 0.45 else "keys"
            if roll > 0.7:
                label = self.pick([k for k, v in NEW_LABELS.items() if v == business.category] or [business.label])
                if label in NEW_LABELS:
                    keys["category"], expected, subtype = label, NEW_LABELS[label], "new_label"
        return LabelledDraft(ts, "clean", subtype, keys, expected_category=expected)

    def spam(self) -> LabelledDraft:
        rng = self.rng
        business = self.business()
        ts = self.when()
        keys = self.base_keys(business, ts)
        subtype = self.pick(tuple(SPAM))
        phrase = self.pick(SPAM[subtype]).format(
            phone=f"+1 {rng.integers(200, 999)} {rng.integers(200, 999)} {rng.integers(1000, 9999)}",
            handle=f"deals{rng.integers(100, 999)}", word=self.pick(("cheap", "best", "top", "mega")),
            n=int(rng.integers(1, 99)), code=f"{rng.integers(16**5, 16**6):x}",
        )
        if rng.random() < 0.5:
            keys["title"] = phrase
            keys["keywords"] = _keywords_of(phrase) or ["offer"]
        else:
            keys["keywords"] = [self.pick(CLEAN_KEYWORDS[business.category])]
            keys["description"] = f"{phrase}. {self.pick(_FILLERS)}"
        return LabelledDraft(ts, "spam", subtype, keys, moderation_label="spam")

    def prohibited(self) -> LabelledDraft:
        rng = self.rng
        business = self.business()
        ts = self.when()
        keys = self.base_keys(business, ts)
        subtype = self.pick(tuple(PROHIBITED))
        phrase = self.pick(PROHIBITED[subtype])
        style = rng.random()
        if style < 0.4:
            keys["keywords"] = [phrase]
        elif style < 0.75:
            keys["title"], keys["keywords"] = phrase.capitalize(), _keywords_of(phrase) or ["special"]
        else:
            keys["keywords"] = [self.pick(CLEAN_KEYWORDS[business.category])]
            keys["description"] = f"{phrase.capitalize()}. {self.pick(_FILLERS)}"
        return LabelledDraft(ts, "prohibited", subtype, keys, moderation_label=PROHIBITED_LABELS[subtype])

    def price_fraud(self) -> LabelledDraft:
        rng = self.rng
        candidates = [b for b in self.businesses if len(self.by_business.get(b.id, [])) >= 3]
        business = self.pick(candidates) if candidates else self.business()  # type: ignore[arg-type]
        ts = self.when()
        keys = self.base_keys(business, ts)
        currency = keys["currency"]
        usual = self.usual_price(business)  # the regular (undiscounted) price it usually asks
        for key in ("price", "original_price", "reduced_price"):
            keys.pop(key, None)
        subtype = self.pick(("inflated_original", "fake_discount", "absurd_discount", "bait"))
        if subtype == "inflated_original":
            keys["original_price"] = round_price(usual * float(rng.uniform(2.2, 4.0)), currency)
            keys["reduced_price"] = round_price(usual * float(rng.uniform(0.95, 1.1)), currency)
        elif subtype == "fake_discount":
            keys["original_price"] = round_price(usual * float(rng.uniform(1.6, 2.0)), currency)
            keys["reduced_price"] = round_price(usual * float(rng.uniform(1.0, 1.1)), currency)
        elif subtype == "absurd_discount":
            keys["original_price"] = round_price(usual, currency)
            keys["reduced_price"] = max(0.25, round(usual * float(rng.uniform(0.01, 0.05)), 2))
        else:
            keys["price"] = max(0.25, round(usual / float(rng.uniform(25.0, 60.0)), 2))
        own = [i for i in self.by_business.get(business.id, []) if i.kind in ("offer", "service")]
        if own and rng.random() < 0.7:  # the fraud re-uses the business's usual wording
            title = own[int(rng.integers(len(own)))].text.split(" — ")[0]
            keys["title"], keys["keywords"] = title, _keywords_of(title)
        else:
            keys["keywords"] = [self.pick(CLEAN_KEYWORDS[business.category])]
        return LabelledDraft(ts, "price_fraud", subtype, keys, moderation_label="price_fraud")

    def add_duplicates(self, drafts: list[LabelledDraft], count: int) -> list[LabelledDraft]:
        """Re-posts of an item the business still has live: a copy of an old post (history) or
        the same keys as one of its earlier clean drafts."""
        rng = self.rng
        out = list(drafts)
        clean = [d for d in drafts if d.label == "clean" and d.keys["kind"] in ("offer", "product")]
        live_history = [h for h in self.history if h.kind == "offer" and h.valid_to > self.start + 2 * HOUR_S]
        for _ in range(count):
            if clean and (not live_history or rng.random() < 0.6):
                original = clean[int(rng.integers(len(clean)))]
                valid_to = _epoch(original.keys["valid_to"])
                ts = float(rng.uniform(original.ts + 60.0, max(original.ts + 120.0, valid_to - HOUR_S)))
                keys = {k: (list(v) if isinstance(v, list) else v) for k, v in original.keys.items()}
                keys["valid_from"] = _iso(ts)
                if keys.get("keywords") and rng.random() < 0.5:
                    keys["keywords"] = list(reversed(keys["keywords"]))
                if keys.get("title") and rng.random() < 0.5:
                    keys["title"] = keys["title"] + "!"
                out.append(LabelledDraft(ts, "duplicate", "same_keys", keys, duplicate_of=original.draft_id,
                                         moderation_label="duplicate"))
            elif live_history:
                original_item = live_history[int(rng.integers(len(live_history)))]
                business = next(b for b in self.businesses if b.id == original_item.business_id)
                ts = float(rng.uniform(self.start, max(self.start + 60.0, original_item.valid_to - HOUR_S)))
                keys = self.base_keys(business, ts, kind="offer")
                title, _, description = original_item.text.partition(" — ")
                keys["title"] = title if rng.random() < 0.5 else f"{title}!"
                keys["description"] = description
                keys["keywords"] = _keywords_of(title)
                keys["valid_to"] = _iso(max(original_item.valid_to, ts + HOUR_S))
                for key in ("price", "original_price", "reduced_price"):
                    keys.pop(key, None)
                if original_item.original_price:
                    keys["original_price"], keys["reduced_price"] = original_item.original_price, original_item.price
                else:
                    keys["price"] = original_item.price
                out.append(LabelledDraft(ts, "duplicate", "repost", keys, duplicate_of=original_item.item_id,
                                         moderation_label="duplicate"))
        out.sort(key=lambda d: d.ts)
        return out


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _collides(item: Item, earlier: list[Item]) -> bool:
    """Whether the business already has this item live: same title (numbers aside) and the same
    time. The simulator posts such repeats now and then; they are duplicates, not clean drafts."""
    title = _NUMBERS.sub("", item.title)
    for other in earlier:
        if other.business.id != item.business.id or _NUMBERS.sub("", other.title) != title:
            continue
        if item.starts_at is not None and other.starts_at is not None:
            if abs(item.starts_at - other.starts_at) <= 1800:
                return True
        elif max(item.valid_from, other.valid_from) < min(item.valid_to, other.valid_to):
            return True
    return False


__all__ = ["CLASSES", "DEFAULT_SHARES", "HistoryItem", "LabelledDraft", "LabelledSet", "labelled_drafts"]
