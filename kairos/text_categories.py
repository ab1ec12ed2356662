"""Category vocabulary: map free labels and free text onto the canonical categories.

Businesses label themselves however they like ("Café", "Beauty Salon", "Yoga studio") and users
type or say what they want ("cheap spa near me", "football match tonight"). Both end up as one of
:data:`kairos.schema.CATEGORIES` through one small lexicon kept here, so that the decoder, the
search parser and the simulator agree on what a word means.

>>> normalise_category("Café")
'coffee'
>>> category_from_text("football match tonight")
'sport'
>>> category_from_text("something nice") is None
True
"""

from __future__ import annotations

import re
import unicodedata

from kairos.schema import CATEGORIES

#: Words and short phrases (already folded: lower case, no accents) that name a category.
#: Phrases of two words are matched before single words, so "coffee shop" is not also "retail".
LEXICON: dict[str, tuple[str, ...]] = {
    "food": (
        "food", "restaurant", "restaurants", "pizza", "burger", "sushi", "ramen", "tacos", "taco",
        "dinner", "lunch", "brunch", "breakfast", "eat", "eats", "dining", "diner", "bistro",
        "brasserie", "bakery", "bagel", "noodles", "steak", "vegan", "biryani", "dosa", "thali",
        "curry", "street food", "food truck", "happy hour", "tapas", "dim sum", "vada pav",
    ),
    "coffee": (
        "coffee", "cafe", "cafes", "espresso", "latte", "cappuccino", "flat white", "cold brew",
        "tea", "chai", "matcha", "coffee shop", "coffeehouse", "roastery",
    ),
    "spa": (
        "spa", "spas", "massage", "massages", "beauty", "salon", "facial", "manicure", "pedicure",
        "nails", "nail salon", "sauna", "hammam", "wellness", "barber", "haircut", "hair salon",
        "waxing", "skincare", "ayurvedic massage", "beautician", "blowout",
    ),
    "fitness": (
        "gym", "gyms", "yoga", "pilates", "fitness", "workout", "crossfit", "spin class",
        "spinning", "zumba", "bootcamp", "personal trainer", "hiit", "barre", "training session",
    ),
    "sport": (
        "sport", "sports", "match", "matches", "football", "soccer", "cricket", "basketball",
        "baseball", "hockey", "tennis", "stadium", "game tonight", "ipl", "knicks", "yankees",
        "mets", "nets", "rangers", "kabaddi", "marathon", "boxing match", "watch party",
    ),
    "culture": (
        "culture", "cultural", "concert", "concerts", "theatre", "theater", "museum", "museums",
        "gallery", "exhibition", "jazz", "opera", "ballet", "comedy", "stand up", "standup",
        "live music", "gig", "poetry", "cinema", "movie", "film", "art show", "broadway",
        "bollywood", "recital", "culture night",
    ),
    "retail": (
        "retail", "shop", "shops", "shopping", "fashion", "boutique", "store", "clothes",
        "clothing", "sneakers", "shoes", "jewellery", "jewelry", "bookstore", "books",
        "electronics", "outlet", "apparel",
    ),
    "services": (
        "services", "repair", "repairs", "cleaning", "cleaner", "cleaners", "plumber",
        "electrician", "laundry", "dry cleaning", "tailor", "locksmith", "handyman", "car wash",
        "phone repair", "movers", "pest control",
    ),
}

# Whole-label synonyms, checked before any word splitting ("cafe" alone is coffee).
_LABELS: dict[str, str] = {word: category for category, words in LEXICON.items() for word in words}
_LABELS.update({category: category for category in CATEGORIES})

_PHRASES = {word for word in _LABELS if " " in word}
_NON_WORD = re.compile(r"[^a-z0-9]+")


def fold(text: str) -> str:
    """Lower-case, strip accents and punctuation, collapse spaces: 'Café & Co.' -> 'cafe co'."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", ascii_text.lower()).strip()


def _singular(word: str) -> str:
    """Cheap plural folding; the lexicon lists irregular forms itself."""
    if word.endswith("es") and word[:-2] in _LABELS:
        return word[:-2]
    if word.endswith("s") and word[:-1] in _LABELS:
        return word[:-1]
    return word


def _hits(folded: str) -> list[tuple[int, str]]:
    """(token position, category) for every lexicon hit; two-word phrases win over their words."""
    tokens = folded.split()
    hits: list[tuple[int, str]] = []
    i = 0
    while i < len(tokens):
        pair = f"{tokens[i]} {tokens[i + 1]}" if i + 1 < len(tokens) else ""
        if pair in _PHRASES:
            hits.append((i, _LABELS[pair]))
            i += 2
            continue
        word = _singular(tokens[i])
        if word in _LABELS:
            hits.append((i, _LABELS[word]))
        i += 1
    return hits


def category_from_text(text: str) -> str | None:
    """The category a free-text query or transcript is about, or None when it names none.

    The category with the most keyword hits wins; a tie goes to the one mentioned first, because
    people tend to lead with what they want ("spa and dinner" is a spa search).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    hits = _hits(fold(text))
    if not hits:
        return None
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for position, category in hits:
        counts[category] = counts.get(category, 0) + 1
        first.setdefault(category, position)
    return max(counts, key=lambda c: (counts[c], -first[c]))


def normalise_category(raw: str | None) -> str | None:
    """One of ``CATEGORIES`` for a known label or synonym, else the trimmed lower-cased label.

    ``None`` and blank labels give ``None``. A multi-word label is mapped only when all its
    keywords agree on one category ("Beauty Salon" -> spa), so that odd labels stay visible as
    they are instead of being forced into a wrong bucket.
    """
    if raw is None:
        return None
    trimmed = str(raw).strip()
    if not trimmed:
        return None
    folded = fold(trimmed)
    if folded in _LABELS:
        return _LABELS[folded]
    singular = _singular(folded)
    if singular in _LABELS:
        return _LABELS[singular]
    categories = {category for _, category in _hits(folded)}
    if len(categories) == 1:
        return categories.pop()
    return trimmed.lower()


__all__ = ["LEXICON", "category_from_text", "fold", "normalise_category"]
