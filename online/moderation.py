"""Moderation of drafted events: rules, near-duplicate detection and an online text classifier.

A draft gets one :class:`Verdict`, ``approve``, ``review`` or ``reject``, with a :class:`Finding`
per reason. The verdict comes from four parts, each usable and tested on its own:

* **Rules** (:class:`ContentRules`, :func:`spam_findings`, :func:`price_findings`,
  :func:`price_history_findings`, :func:`media_findings`): prohibited goods, violence, adult
  content and hate by lexicon (with leetspeak folding and exceptions such as "massage gun");
  spam markers (links, phone numbers, money schemes, shouting); impossible or implausible prices;
  discount claims that the item's own price history contradicts; media URL scheme, type and size.
* **Near duplicates** (:class:`NearDuplicateDetector`): cosine similarity of MiniLM embeddings
  against an index of recent items; a business re-posting what it already has live, or the same
  long free text posted by another business.
* **Online text classifier** (:class:`TextModerationClassifier`): one-vs-rest River logistic
  regressions over the embedding, learning from moderator decisions and from user reports.
* **Media hook** (:class:`MediaClassifier`): a protocol for an image/video classifier. **None
  ships**: Kairos never fetches media URLs, so :class:`NoMediaClassifier` (the default) looks at
  nothing but the URL and its declared type and size.

:class:`Moderator` combines them: any ``reject`` finding rejects, any ``review`` finding sends the
draft to a person, otherwise it is approved.

>>> import numpy as np
>>> moderator = Moderator()
>>> draft = DraftSignals(text="20% off lattes. Walk-ins welcome.", business_text="lattes",
...                      business_id="b1", kind="offer", category="coffee", price=4.0,
...                      original_price=5.0, vector=np.eye(384, dtype=np.float32)[0])
>>> moderator.predict_one(draft).verdict
'approve'
>>> bad = DraftSignals(text="cheap c0caine delivered", business_text="c0caine", business_id="b1",
...                    kind="offer", category="food", price=10.0, vector=np.eye(384, dtype=np.float32)[1])
>>> verdict = moderator.predict_one(bad)
>>> verdict.verdict, verdict.primary_label
('reject', 'prohibited')
"""

from __future__ import annotations

import ipaddress
import math
import re
import statistics
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

#: Verdicts, from mildest to harshest.
VERDICTS = ("approve", "review", "reject")
_SEVERITY = {"approve": 0, "review": 1, "reject": 2}

#: What a finding is about. The first four are content classes the text classifier can learn.
CONTENT_LABELS = ("prohibited", "violence", "adult", "hate")
LABELS = ("ok", "spam", *CONTENT_LABELS, "duplicate", "price_fraud", "media")
#: Labels that describe the words of a draft (and so can teach a text classifier). A duplicate or
#: a fraudulent price is not a property of the words: such decisions do not train it.
TEXT_LABELS = ("ok", "spam", *CONTENT_LABELS)
#: When a draft has several findings, the primary label is the one first in this order (after
#: the harshest action): the worst harm is named first.
LABEL_PRIORITY = ("prohibited", "violence", "adult", "hate", "price_fraud", "media", "duplicate", "spam")


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason for a verdict: what was found, what it calls for and, in words, why."""

    code: str  # e.g. "content.prohibited", "price.inflated_original", "duplicate.same_business"
    label: str  # one of LABELS
    action: str  # "review" or "reject"
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "label": self.label, "action": self.action, "message": self.message,
                "evidence": dict(self.evidence)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one draft: ``approve``, ``review`` or ``reject``, with every reason."""

    verdict: str
    findings: tuple[Finding, ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def primary_label(self) -> str:
        """``ok`` when approved, else the label of the most serious finding."""
        if not self.findings:
            return "ok"
        worst = max(_SEVERITY[f.action] for f in self.findings)
        labels = {f.label for f in self.findings if _SEVERITY[f.action] == worst}
        return next((label for label in LABEL_PRIORITY if label in labels), sorted(labels)[0])

    @property
    def reasons(self) -> list[str]:
        return [f.message for f in self.findings]


def combine(findings: Iterable[Finding], scores: Mapping[str, float] | None = None) -> Verdict:
    """The verdict of a set of findings: the harshest action any of them calls for."""
    ordered = tuple(sorted(findings, key=lambda f: (-_SEVERITY[f.action], LABEL_PRIORITY.index(f.label)
                                                    if f.label in LABEL_PRIORITY else 99)))
    worst = max((_SEVERITY[f.action] for f in ordered), default=0)
    return Verdict(VERDICTS[worst], ordered, dict(scores or {}))


# ------------------------------------------------------------------------------------------------
# Text normalisation shared by the rules
# ------------------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[^a-z0-9]+")
#: Leetspeak digits and symbols inside words ("c0caine", "w33d", "p0rn", "$ex").
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "!": "i", "|": "i"})
_HAS_LETTER = re.compile(r"[a-z]")
_LEETABLE = re.compile(r"[0-9@$!|]")


def _ascii_lower(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def token_streams(text: str) -> tuple[list[str], list[str]]:
    """(plain tokens, tokens with leetspeak undone). Matching both catches "c0caine" without
    turning "ak47" or "4pm" into nonsense in the plain stream."""
    lowered = _ascii_lower(text or "")
    plain = _NON_WORD.sub(" ", lowered).split()
    undone = []
    for raw in lowered.split():
        if _HAS_LETTER.search(raw) and _LEETABLE.search(raw):
            raw = raw.translate(_LEET)
        undone.extend(_NON_WORD.sub(" ", raw).split())
    return plain, undone


def _stem(token: str) -> str:
    """Cheap plural folding so "guns" matches "gun"; short words stay as they are."""
    if len(token) > 4 and token.endswith("es") and not token.endswith("ses"):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def _phrase(text: str) -> tuple[str, ...]:
    return tuple(_stem(t) for t in _NON_WORD.sub(" ", _ascii_lower(text)).split())


# ------------------------------------------------------------------------------------------------
# Content rules: prohibited goods, violence, adult, hate
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lexicon:
    """Terms of one content label: ``reject`` terms are unambiguous, ``review`` terms need a person;
    ``exceptions`` are phrases in which a term is harmless ("massage gun", "murder mystery")."""

    label: str
    reject: tuple[str, ...] = ()
    review: tuple[str, ...] = ()
    exceptions: tuple[str, ...] = ()


DEFAULT_LEXICONS: tuple[Lexicon, ...] = (
    Lexicon(
        "prohibited",
        reject=(
            "cocaine", "crack cocaine", "heroin", "meth", "methamphetamine", "crystal meth", "fentanyl",
            "mdma", "molly pills", "ecstasy pills", "lsd", "ketamine", "xanax", "oxycodone", "oxycontin",
            "percocet", "no prescription", "without prescription", "prescription free", "weed",
            "marijuana", "cannabis", "thc", "magic mushrooms", "shrooms", "psilocybin", "gun", "firearm",
            "handgun", "pistol", "rifle", "shotgun", "ak47", "ak 47", "ar15", "ar 15", "glock", "ammo",
            "ammunition", "silencer", "ghost gun", "grenade", "explosive", "dynamite", "counterfeit",
            "fake id", "fake passport", "fake document", "forged document", "fake diploma",
            "replica rolex", "cvv", "credit card dump", "hacked account", "ivory", "rhino horn",
            "tiger skin", "kidney for sale", "organ for sale", "cockfight", "dog fight", "dogfighting",
        ),
        review=(
            "replica", "first copy", "knock off", "knockoff", "steroid", "diet pill", "cbd", "firework",
            "stolen", "bulk pill", "vape juice", "no questions asked",
        ),
        exceptions=(
            "massage gun", "glue gun", "water gun", "nerf gun", "heat gun", "top gun", "gun metal",
            "weed control", "weed removal", "weed killer", "weed whacker", "weeding",
        ),
    ),
    Lexicon(
        "violence",
        reject=(
            "kill you", "kill them", "kill all", "will kill", "going to kill", "shoot up", "shoot them",
            "bomb threat", "blow up the", "behead", "massacre", "murder them", "stab you", "beat you up",
            "gore video", "snuff film", "execution video", "terror attack", "school shooting",
        ),
        review=("bloodbath", "murder", "bare knuckle", "street fight", "weapon", "brawl", "fight club"),
        exceptions=("murder mystery",),
    ),
    Lexicon(
        "adult",
        reject=(
            "porn", "porno", "pornography", "xxx", "escort", "escort service", "happy ending",
            "erotic massage", "nude massage", "naked massage", "body to body", "b2b massage",
            "sexual service", "sex service", "sex worker", "cam girl", "camgirl", "onlyfans", "nsfw",
            "adult service", "full service massage", "sugar daddy", "hookup",
        ),
        review=("sensual", "strip club", "stripper", "adult entertainment", "tantric", "erotic"),
    ),
    Lexicon(
        "hate",
        reject=(
            "heil hitler", "white power", "race war", "ethnic cleansing", "gas the", "whites only",
            "white only", "subhuman", "1488",
        ),
        review=("vermin", "go back to your country"),
    ),
)

#: Groups that exclusion phrasing ("no X", "X not welcome") targets; a service refused to a
#: protected group is discrimination whatever the words around it.
PROTECTED_GROUPS = (
    "black", "blacks", "white", "whites", "asian", "asians", "muslim", "muslims", "hindu", "hindus",
    "christian", "christians", "jew", "jews", "sikh", "sikhs", "gay", "gays", "lesbian", "lesbians",
    "immigrant", "immigrants", "refugee", "refugees", "mexican", "mexicans", "indian", "indians",
    "chinese", "african", "africans", "arab", "arabs", "woman", "women", "trans", "disabled",
)
_EXCLUSION_AFTER = (("not", "allowed"), ("not", "welcome"), ("keep", "out"), ("go", "home"), ("banned",),
                    ("go", "back"), ("need", "not", "apply"))


class ContentRules:
    """Lexicon rules for prohibited goods, violence, adult content and hate.

    Matching is on word boundaries after folding accents and case, with plurals folded and
    leetspeak undone ("w33d", "p0rn"). Operators extend the rules by passing their own
    :class:`Lexicon` objects; the defaults avoid slurs and rely on phrases and patterns.

    >>> rules = ContentRules()
    >>> [f.label for f in rules.check("Guns and ammo for sale")]
    ['prohibited']
    >>> rules.check("Percussion massage gun, 30% off")
    []
    >>> [(f.label, f.action) for f in rules.check("No immigrants allowed at this party")]
    [('hate', 'reject')]
    """

    def __init__(self, lexicons: Sequence[Lexicon] = DEFAULT_LEXICONS, max_phrase_words: int = 4) -> None:
        self.lexicons = tuple(lexicons)
        self.max_phrase_words = max_phrase_words
        self._terms: dict[tuple[str, ...], list[tuple[str, str, str]]] = {}
        self._exceptions: list[tuple[str, ...]] = []
        for lexicon in self.lexicons:
            for action, terms in (("reject", lexicon.reject), ("review", lexicon.review)):
                for term in terms:
                    self._terms.setdefault(_phrase(term), []).append((lexicon.label, action, term))
            self._exceptions.extend(_phrase(e) for e in lexicon.exceptions)
        self._groups = {_stem(g) for g in PROTECTED_GROUPS}

    def check(self, text: str) -> list[Finding]:
        hits: dict[str, dict[str, set[str]]] = {}
        for tokens in token_streams(text):
            stems = [_stem(t) for t in tokens]
            covered = self._exception_spans(stems)
            for n in range(1, self.max_phrase_words + 1):
                for i in range(len(stems) - n + 1):
                    key = tuple(stems[i:i + n])
                    if key not in self._terms or any(a <= i and i + n <= b for a, b in covered):
                        continue
                    for label, action, term in self._terms[key]:
                        hits.setdefault(label, {}).setdefault(action, set()).add(term)
            for phrase in self._exclusions(stems):
                hits.setdefault("hate", {}).setdefault("reject", set()).add(phrase)
        findings = []
        for label, by_action in hits.items():
            action = "reject" if "reject" in by_action else "review"
            terms = sorted(set().union(*by_action.values()))
            what = {"prohibited": "prohibited goods", "violence": "violence", "adult": "adult content",
                    "hate": "hateful or discriminatory wording"}.get(label, label)
            findings.append(Finding(
                f"content.{label}", label, action,
                f"{what}: {', '.join(repr(t) for t in terms[:5])}",
                {"terms": terms},
            ))
        return sorted(findings, key=lambda f: f.label)

    def _exception_spans(self, stems: list[str]) -> list[tuple[int, int]]:
        spans = []
        for phrase in self._exceptions:
            n = len(phrase)
            for i in range(len(stems) - n + 1):
                if tuple(stems[i:i + n]) == phrase:
                    spans.append((i, i + n))
        return spans

    def _exclusions(self, stems: list[str]) -> list[str]:
        """"no X" and "X not welcome"-style phrases aimed at a protected group."""
        found = []
        for i, token in enumerate(stems):
            if token not in self._groups:
                continue
            if i > 0 and stems[i - 1] in ("no", "without"):
                found.append(f"{stems[i - 1]} {token}")
            for tail in _EXCLUSION_AFTER:
                if tuple(stems[i + 1:i + 1 + len(tail)]) == tail:
                    found.append(f"{token} {' '.join(tail)}")
        return found


# ------------------------------------------------------------------------------------------------
# Spam markers
# ------------------------------------------------------------------------------------------------

_URL = re.compile(r"(https?://|www\.|\b[a-z0-9-]{2,}\.(com|net|org|ly|io|co|biz|info|xyz|top|click)\b)", re.I)
_PHONE = re.compile(r"\+?\(?\d[\d\s().-]{7,}\d")
_CONTACT = ("whatsapp", "telegram", "wechat", "signal me", "dm me", "dm for", "text me", "call now",
            "message me", "inbox me", "contact me on")
_SCHEMES = ("make money", "earn money", "earn $", "work from home", "get rich", "passive income",
            "investment opportunity", "guaranteed return", "double your money", "crypto", "bitcoin",
            "forex", "loan approval", "instant loan", "credit repair", "casino", "betting tip", "lottery",
            "you have won", "you won", "free money", "buy followers", "followers and likes", "cash prize",
            "miracle cure", "lose weight fast", "no credit check")
_PRESSURE = ("click here", "act now", "buy now", "limited time only", "100% free", "100% guaranteed",
             "risk free", "order now", "don't miss out", "dont miss out", "once in a lifetime", "hurry")


def spam_findings(business_text: str, review_at: float = 1.0, reject_at: float = 2.0) -> list[Finding]:
    """Spam markers in the words a business typed itself (keywords, its own title and description,
    one per line). Generated template text is ours and never checked here. Each marker adds to a score; at
    ``review_at`` a person looks, at ``reject_at`` the draft is rejected.

    >>> spam_findings("Best latte in town")
    []
    >>> [f.action for f in spam_findings("CLICK HERE!!! whatsapp +1 917 555 0142 to earn money")]
    ['reject']
    """
    text = business_text or ""
    lowered = _ascii_lower(text)
    markers: dict[str, float] = {}
    if _URL.search(lowered):
        markers["link in the text"] = 1.0
    phones = [m.group(0) for m in _PHONE.finditer(lowered)]
    if any(sum(ch.isdigit() for ch in p) >= 9 for p in phones) or any(c in lowered for c in _CONTACT):
        markers["contact details in the text"] = 1.0
    schemes = [s for s in _SCHEMES if s in lowered]
    if schemes:
        markers[f"money-scheme wording ({', '.join(schemes[:3])})"] = min(2.0, 1.0 * len(schemes))
    pressure = [p for p in _PRESSURE if p in lowered]
    if pressure:
        markers[f"pressure wording ({', '.join(pressure[:3])})"] = min(1.0, 0.5 * len(pressure))
    for piece in text.splitlines():
        letters = [ch for ch in piece if ch.isalpha()]
        if len(letters) >= 15 and sum(ch.isupper() for ch in letters) / len(letters) >= 0.6:
            markers["shouting (mostly capitals)"] = 0.75
    if re.search(r"[!?$]{3,}", text):
        markers["runs of !, ? or $"] = 0.5
    tokens = [t for t in _NON_WORD.sub(" ", lowered).split() if len(t) > 2]
    if tokens:
        most = max(tokens.count(t) for t in set(tokens))
        if most >= 4 or (len(tokens) >= 8 and len(set(tokens)) / len(tokens) < 0.5):
            markers["repeated words"] = 0.75
    score = sum(markers.values())
    if score < review_at:
        return []
    action = "reject" if score >= reject_at else "review"
    return [Finding("spam.markers", "spam", action, f"looks like spam: {'; '.join(markers)}",
                    {"score": round(score, 2), "markers": sorted(markers)})]


# ------------------------------------------------------------------------------------------------
# Prices
# ------------------------------------------------------------------------------------------------


def price_findings(
    price: float | None,
    original_price: float | None,
    reference_price: float | None = None,
    *,
    free_allowed: bool = False,
    review_discount: float = 0.85,
    reject_discount: float = 0.95,
    max_ratio: float = 20.0,
    inflated_ratio: float = 2.5,
) -> list[Finding]:
    """Impossible or implausible prices, against the area's typical price when it is known.

    ``reference_price`` is the median price of comparable items nearby; without it only the
    price's own consistency is checked. An original price ``inflated_ratio`` times the area's
    typical price behind a discount of half or more is the inflate-then-discount trick.

    >>> price_findings(40.0, 50.0, 45.0)
    []
    >>> [f.code for f in price_findings(1.0, 100.0, 90.0)]
    ['price.discount_implausible', 'price.bait']
    """
    findings: list[Finding] = []
    for name, value in (("price", price), ("original price", original_price)):
        if value is not None and (not math.isfinite(value) or value < 0):
            return [Finding("price.invalid", "price_fraud", "reject", f"{name} {value!r} is not a valid amount")]
    if price is None:
        return findings
    if original_price is not None and price > original_price + 1e-9:
        return [Finding("price.above_original", "price_fraud", "reject",
                        f"reduced price {price:g} is above the original price {original_price:g}")]
    if price == 0 and not free_allowed:
        findings.append(Finding("price.zero", "price_fraud", "review",
                                "price 0 on an item that is sold; free items are events or notices"))
    if original_price and original_price > 0:
        discount = 1.0 - price / original_price
        if discount >= review_discount and price > 0:
            action = "reject" if discount >= reject_discount else "review"
            findings.append(Finding(
                "price.discount_implausible", "price_fraud", action,
                f"{discount:.0%} off ({original_price:g} -> {price:g}) is implausible",
                {"discount": round(discount, 4)},
            ))
    if reference_price and reference_price > 0 and price > 0:
        if price > reference_price * max_ratio:
            findings.append(Finding(
                "price.far_above_area", "price_fraud", "review",
                f"price {price:g} is {price / reference_price:.0f}x the typical {reference_price:g} nearby",
                {"reference_price": reference_price},
            ))
        elif price < reference_price / max_ratio:
            findings.append(Finding(
                "price.bait", "price_fraud", "review",
                f"price {price:g} is under 1/{max_ratio:g} of the typical {reference_price:g} nearby (bait?)",
                {"reference_price": reference_price},
            ))
        if (original_price and original_price > reference_price * inflated_ratio
                and 1.0 - price / original_price >= 0.5):
            findings.append(Finding(
                "price.inflated_original_area", "price_fraud", "review",
                f"original price {original_price:g} is {original_price / reference_price:.1f}x the typical "
                f"{reference_price:g} nearby, making the {1.0 - price / original_price:.0%} discount look "
                "bigger than it is",
                {"reference_price": reference_price},
            ))
    return findings


def price_history_findings(
    price: float | None,
    original_price: float | None,
    history: Sequence[float],
    *,
    min_history: int = 3,
    review_margin: float = 0.25,
    reject_margin: float = 0.75,
    min_claimed_discount: float = 0.1,
    fake_discount: float = 0.3,
) -> list[Finding]:
    """Discount claims that the item's own price history contradicts.

    ``history`` holds the item's *regular* prices in recent posts (the original price of a
    discounted post, else its price), for this item or this business's near-identical items.
    Two tricks show: a claimed original price above any regular price seen (inflate, then
    discount), and a "reduced" price at or above the usual regular price behind a big claimed
    discount (the discount is not real).

    >>> price_history_findings(60.0, 120.0, [58.0, 60.0, 62.0, 61.0])[0].code
    'price.original_above_history'
    >>> price_history_findings(45.0, 60.0, [58.0, 60.0, 62.0, 61.0])
    []
    >>> price_history_findings(66.0, 95.0, [58.0, 60.0, 60.0, 80.0])[0].code
    'price.no_real_discount'
    """
    if price is None or not original_price or original_price <= 0:
        return []
    claimed = 1.0 - price / original_price
    regular = [p for p in history if p is not None and math.isfinite(p) and p > 0]
    if claimed < min_claimed_discount or len(regular) < min_history:
        return []
    highest = max(regular)
    usual = statistics.median(regular)
    evidence = {"highest_regular": highest, "median_regular": usual, "observations": len(regular)}
    if original_price > highest * (1 + review_margin):
        action = "reject" if original_price > highest * (1 + reject_margin) else "review"
        return [Finding(
            "price.original_above_history", "price_fraud", action,
            f"claimed original price {original_price:g} is above any regular price of this item lately "
            f"(highest {highest:g} of {len(regular)})",
            evidence,
        )]
    if claimed >= fake_discount and price >= usual * 1.05:
        return [Finding(
            "price.no_real_discount", "price_fraud", "review",
            f"the reduced price {price:g} is above what this item usually costs ({usual:g}, median of "
            f"{len(regular)}); the {claimed:.0%} discount is not real",
            evidence,
        )]
    return []


@dataclass(frozen=True, slots=True)
class PricedItem:
    """An earlier item of a business, to build the price history of a new draft from."""

    item_id: str
    category: str | None
    price: float | None
    vector: np.ndarray | None = None
    sku: str | None = None
    original_price: float | None = None
    kind: str | None = None

    @property
    def regular_price(self) -> float | None:
        """The price before any discount."""
        return self.original_price if self.original_price else self.price


def similar_item_prices(
    vector: np.ndarray | None,
    category: str | None,
    items: Sequence[PricedItem],
    *,
    kind: str | None = None,
    sku: str | None = None,
    min_similarity: float = 0.5,
    limit: int = 10,
) -> list[float]:
    """Regular prices of the business's earlier items that are the same product as the draft.

    The same ``sku`` when the business gives one; otherwise the ``limit`` items of the same
    category (and kind, when given) most alike by embedding, at least ``min_similarity`` alike:
    a spa's massage posts rather than its facials when it has both, its usual range otherwise.

    >>> a = np.array([1.0, 0.0], dtype=np.float32)
    >>> items = [PricedItem("i1", "spa", 48.0, a, original_price=60.0),
    ...          PricedItem("i2", "spa", 30.0, np.array([0.0, 1.0]))]
    >>> similar_item_prices(a, "spa", items)
    [60.0]
    """
    if sku is not None:
        same = [i.regular_price for i in items if i.sku == sku and i.regular_price is not None]
        if same:
            return [float(p) for p in same]
    scored = []
    for item in items:
        if item.regular_price is None or item.vector is None or vector is None:
            continue
        if category is not None and item.category != category:
            continue
        if kind is not None and item.kind is not None and item.kind != kind:
            continue
        similarity = float(np.dot(vector, item.vector))
        if similarity >= min_similarity:
            scored.append((similarity, float(item.regular_price)))
    scored.sort(key=lambda pair: -pair[0])
    return [price for _, price in scored[:limit]]


# ------------------------------------------------------------------------------------------------
# Media URLs
# ------------------------------------------------------------------------------------------------

IMAGE_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
               "gif": "image/gif", "avif": "image/avif"}
VIDEO_TYPES = {"mp4": "video/mp4", "m4v": "video/mp4", "webm": "video/webm", "mov": "video/quicktime"}
#: Extensions that are never media and may be harmful if someone opens them.
DANGEROUS_EXTENSIONS = {"exe", "apk", "js", "html", "htm", "svg", "zip", "scr", "bat", "msi", "dmg", "sh",
                        "jar", "php", "cmd", "ps1", "rar", "7z"}


@dataclass(frozen=True, slots=True)
class MediaRef:
    """A media link as the business declares it. Kairos never fetches it: type and size are the
    declared ones, checked for consistency, not verified."""

    url: str
    content_type: str | None = None
    size_bytes: int | None = None


@dataclass(frozen=True)
class MediaLimits:
    max_image_bytes: int = 10 * 1024 * 1024
    max_video_bytes: int = 200 * 1024 * 1024


def media_kind(ref: MediaRef) -> str | None:
    """``image``, ``video`` or None, from the declared content type, else the extension."""
    declared = (ref.content_type or "").split(";")[0].strip().lower()
    if declared in IMAGE_TYPES.values():
        return "image"
    if declared in VIDEO_TYPES.values():
        return "video"
    extension = _extension(ref.url)
    if extension in IMAGE_TYPES:
        return "image"
    if extension in VIDEO_TYPES:
        return "video"
    return None


def _extension(url: str) -> str:
    path = urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def media_findings(media: Sequence[MediaRef], limits: MediaLimits = MediaLimits()) -> list[Finding]:
    """Scheme, host, type and declared size of each media link.

    >>> media_findings([MediaRef("https://cdn.example.com/a.jpg", "image/jpeg", 200_000)])
    []
    >>> [f.code for f in media_findings([MediaRef("http://cdn.example.com/a.jpg")])]
    ['media.scheme']
    """
    findings: list[Finding] = []
    for index, ref in enumerate(media):
        where = f"media[{index}]"

        def add(code: str, action: str, message: str, where: str = where, url: str = ref.url) -> None:
            findings.append(Finding(f"media.{code}", "media", action, f"{where}: {message}", {"url": url}))

        try:
            parts = urlsplit(ref.url)
            host = parts.hostname or ""
        except ValueError:
            add("url", "reject", "not a valid URL")
            continue
        if parts.scheme.lower() != "https":
            add("scheme", "reject", f"only https links are accepted, not {parts.scheme or 'no scheme'}://")
            continue
        if not host:
            add("url", "reject", "the link has no host")
            continue
        if parts.username or parts.password:
            add("credentials", "reject", "links must not carry a user name or password")
            continue
        if _private_host(host):
            add("host", "reject", f"{host} is not a public host")
            continue
        extension = _extension(ref.url)
        declared = (ref.content_type or "").split(";")[0].strip().lower()
        if extension in DANGEROUS_EXTENSIONS:
            add("type", "reject", f".{extension} files are not images or videos")
            continue
        known_types = set(IMAGE_TYPES.values()) | set(VIDEO_TYPES.values())
        if declared and declared not in known_types:
            add("type", "reject", f"declared type {declared} is not an accepted image or video type")
            continue
        by_extension = "image" if extension in IMAGE_TYPES else "video" if extension in VIDEO_TYPES else None
        kind = media_kind(ref)
        if kind is None:
            add("type", "review", "neither the extension nor a declared type says it is an image or video")
            continue
        if by_extension is not None and declared and by_extension != kind:
            add("type_mismatch", "review", f"the .{extension} extension disagrees with declared type {declared}")
        if ref.size_bytes is not None:
            limit = limits.max_image_bytes if kind == "image" else limits.max_video_bytes
            if ref.size_bytes > limit:
                add("size", "reject", f"{kind} of {ref.size_bytes / 1e6:.1f} MB is over the "
                                      f"{limit / 1e6:.0f} MB limit")
    return findings


def _private_host(host: str) -> bool:
    if host in ("localhost",) or host.endswith((".local", ".internal", ".localhost")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local or address.is_reserved


class MediaClassifier(Protocol):
    """Hook for an image/video content classifier (nudity, violence, text-in-image spam).

    An implementation receives the declared link and returns findings (label ``adult``,
    ``violence``… and action ``review`` or ``reject``). It decides itself whether and how to fetch
    the media (from an internal object store, never from arbitrary hosts). **Kairos ships none.**
    """

    def classify(self, ref: MediaRef) -> list[Finding]: ...


class NoMediaClassifier:
    """The default: no image or video is looked at; only the URL checks apply."""

    def classify(self, ref: MediaRef) -> list[Finding]:
        return []


# ------------------------------------------------------------------------------------------------
# Near duplicates
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecentItem:
    """An item (or draft) as the duplicate index sees it. Times are epoch seconds."""

    item_id: str
    business_id: str
    vector: np.ndarray
    ts: float
    kind: str = "offer"
    valid_from: float | None = None
    valid_to: float | None = None
    starts_at: float | None = None
    #: Words the business wrote itself (not our template); long identical free text across
    #: businesses is a spam ring, short generic titles ("Jazz night") are not.
    free_words: int = 0


@dataclass(frozen=True, slots=True)
class DuplicateMatch:
    item_id: str
    business_id: str
    similarity: float
    same_business: bool


class NearDuplicateDetector:
    """Embedding index of recent items; flags a draft that repeats one of them.

    Two kinds of near duplicate:

    * the **same business** posting an item whose text is at least ``same_business_threshold``
      alike to one it already has live at the same time (for events and services: the same start
      time within ``start_tolerance_s``; two slots at 14:00 and 16:00 are different items);
    * **another business** posting the same long free text (at least ``copy_min_words`` of its
      own words, similarity at least ``copy_threshold``): copied listings and spam rings.

    The index is a ring buffer of unit vectors searched exactly (a matrix product over at most
    ``capacity`` rows: about a millisecond for 20 000 items); entries older than ``max_age_s``
    are ignored. ``learn_one`` with a known ``item_id`` replaces that entry.

    >>> import numpy as np
    >>> detector = NearDuplicateDetector(dim=2)
    >>> v = np.array([1.0, 0.0], dtype=np.float32)
    >>> detector.learn_one(RecentItem("i1", "b1", v, ts=0.0, valid_from=0.0, valid_to=3600.0))
    >>> detector.predict_one(RecentItem("d1", "b1", v, ts=60.0, valid_from=600.0, valid_to=7200.0))
    DuplicateMatch(item_id='i1', business_id='b1', similarity=1.0, same_business=True)
    >>> detector.predict_one(RecentItem("d2", "b1", v, ts=60.0, valid_from=4000.0, valid_to=7200.0)) is None
    True
    """

    def __init__(
        self,
        dim: int = 384,
        capacity: int = 20_000,
        max_age_s: float = 14 * 86_400.0,
        same_business_threshold: float = 0.85,
        copy_threshold: float = 0.95,
        copy_min_words: int = 12,
        start_tolerance_s: float = 1800.0,
    ) -> None:
        self.dim = dim
        self.capacity = capacity
        self.max_age_s = max_age_s
        self.same_business_threshold = same_business_threshold
        self.copy_threshold = copy_threshold
        self.copy_min_words = copy_min_words
        self.start_tolerance_s = start_tolerance_s
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._items: list[RecentItem | None] = [None] * capacity
        self._slot: dict[str, int] = {}
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slot

    def learn_one(self, item: RecentItem) -> None:
        slot = self._slot.get(item.item_id)
        if slot is None:
            slot = self._next
            evicted = self._items[slot]
            if evicted is not None:
                self._slot.pop(evicted.item_id, None)
            self._next = (self._next + 1) % self.capacity
            self._size = min(self._size + 1, self.capacity)
        self._vectors[slot] = _unit(item.vector, self.dim)
        self._items[slot] = item
        self._slot[item.item_id] = slot

    def forget(self, item_id: str) -> None:
        slot = self._slot.pop(item_id, None)
        if slot is not None:
            self._items[slot] = None
            self._vectors[slot] = 0.0

    def predict_one(self, draft: RecentItem) -> DuplicateMatch | None:
        """The recent item the draft duplicates (the most similar one), or None."""
        if self._size == 0:
            return None
        sims = self._vectors[: self._size] @ _unit(draft.vector, self.dim)
        floor = min(self.same_business_threshold, self.copy_threshold)
        best: DuplicateMatch | None = None
        for slot in np.flatnonzero(sims >= floor):
            other = self._items[int(slot)]
            if other is None or other.item_id == draft.item_id or draft.ts - other.ts > self.max_age_s:
                continue
            similarity = float(sims[slot])
            if other.business_id == draft.business_id:
                if similarity < self.same_business_threshold or not self._same_time(draft, other):
                    continue
                match = DuplicateMatch(other.item_id, other.business_id, round(similarity, 4), True)
            else:
                if (similarity < self.copy_threshold or draft.free_words < self.copy_min_words
                        or other.free_words < self.copy_min_words):
                    continue
                match = DuplicateMatch(other.item_id, other.business_id, round(similarity, 4), False)
            if best is None or (match.same_business, match.similarity) > (best.same_business, best.similarity):
                best = match
        return best

    def _same_time(self, a: RecentItem, b: RecentItem) -> bool:
        if a.kind in ("event", "service") and a.starts_at is not None and b.starts_at is not None:
            return abs(a.starts_at - b.starts_at) <= self.start_tolerance_s
        return _overlap(a.valid_from, a.valid_to, b.valid_from, b.valid_to)


def _overlap(a_from: float | None, a_to: float | None, b_from: float | None, b_to: float | None) -> bool:
    lo = max(a_from if a_from is not None else -math.inf, b_from if b_from is not None else -math.inf)
    hi = min(a_to if a_to is not None else math.inf, b_to if b_to is not None else math.inf)
    return lo < hi


def _unit(vector: np.ndarray, dim: int) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape[0] != dim:
        raise ValueError(f"vector has {v.shape[0]} dimensions, the index {dim}")
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def duplicate_finding(match: DuplicateMatch) -> Finding:
    if match.same_business:
        message = (f"near duplicate ({match.similarity:.2f} alike) of item {match.item_id}, which this "
                   "business already has live at the same time")
    else:
        message = (f"same text ({match.similarity:.2f} alike) as item {match.item_id} of another business "
                   f"({match.business_id})")
    return Finding("duplicate.same_business" if match.same_business else "duplicate.copied", "duplicate",
                   "review", message, {"item_id": match.item_id, "similarity": match.similarity})


# ------------------------------------------------------------------------------------------------
# Online text classifier
# ------------------------------------------------------------------------------------------------


class TextModerationClassifier:
    """River logistic regressions over a text embedding, learned online.

    Two parts: a binary model of *harmful or not* that learns from every example (so that all
    harmful examples, whatever their label, teach it), and one-vs-rest models among the harmful
    labels of :data:`TEXT_LABELS` that name the most likely kind of harm. ``w`` weighs an example:
    a moderator's decision counts fully, agreeing user reports and rule rejections less, an item
    nobody complained about least. :meth:`predict_proba_one` returns ``{}`` until the model has
    seen ``min_examples`` (by weight) of ``ok`` and of harmful labels, so a fresh install never
    blocks drafts on noise.

    Embeddings are unit vectors, so one SGD step moves a logit by about ``learning_rate`` times
    the error; the default (2.0) lets a few decisions count, as moderation needs.

    >>> import numpy as np
    >>> clf = TextModerationClassifier(min_examples=2)
    >>> clean, spam = np.eye(384, dtype=np.float32)[0], np.eye(384, dtype=np.float32)[1]
    >>> for _ in range(10):
    ...     clf.learn_one(clean, "ok")
    ...     clf.learn_one(spam, "spam")
    >>> clf.predict_one(spam), clf.predict_one(clean)
    ('spam', 'ok')
    """

    def __init__(
        self,
        labels: Sequence[str] = TEXT_LABELS,
        learning_rate: float = 2.0,
        l2: float = 0.0,
        min_examples: float = 20.0,
    ) -> None:
        from river import linear_model, optim

        if "ok" not in labels or len(labels) < 2:
            raise ValueError("labels must include 'ok' and at least one harmful label")
        self.labels = tuple(labels)
        self.learning_rate = learning_rate
        self.l2 = l2
        self.min_examples = min_examples

        def model() -> Any:
            return linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2, intercept_lr=0.1)

        self.harmful = model()
        self.kinds = {label: model() for label in self.labels if label != "ok"}
        self.counts: dict[str, float] = dict.fromkeys(self.labels, 0.0)

    @property
    def ready(self) -> bool:
        bad = sum(n for label, n in self.counts.items() if label != "ok")
        return self.counts["ok"] >= self.min_examples and bad >= self.min_examples

    def learn_one(self, x: np.ndarray | Mapping[Any, float], y: str, w: float = 1.0) -> None:
        if y not in self.counts:
            raise ValueError(f"unknown label {y!r}; expected one of {self.labels}")
        features = _features(x)
        self.harmful.learn_one(features, y != "ok", w=w)
        if y != "ok":
            for label, model in self.kinds.items():
                model.learn_one(features, label == y, w=w)
        self.counts[y] += w

    def predict_proba_one(self, x: np.ndarray | Mapping[Any, float]) -> dict[str, float]:
        """``{"ok": 1 - p_harmful, label: p_harmful * share, ...}`` over the labels seen."""
        if not self.ready:
            return {}
        features = _features(x)
        p_harmful = float(self.harmful.predict_proba_one(features).get(True, 0.0))
        shares = {label: float(model.predict_proba_one(features).get(True, 0.0))
                  for label, model in self.kinds.items() if self.counts[label] > 0}
        total = sum(shares.values())
        if total <= 0:
            shares = {label: 1.0 for label in shares}
            total = float(len(shares))
        out = {"ok": 1.0 - p_harmful}
        out.update({label: p_harmful * share / total for label, share in shares.items()})
        return out

    def predict_one(self, x: np.ndarray | Mapping[Any, float]) -> str | None:
        proba = self.predict_proba_one(x)
        return max(proba, key=proba.__getitem__) if proba else None


def _features(x: np.ndarray | Mapping[Any, float]) -> Mapping[Any, float]:
    if isinstance(x, Mapping):
        return x
    return {i: float(v) for i, v in enumerate(np.asarray(x, dtype=np.float32).reshape(-1))}


def text_label_of(label: str | None) -> str | None:
    """The classifier label a moderation label teaches, or None when it is not about the words."""
    return label if label in TEXT_LABELS else None


# ------------------------------------------------------------------------------------------------
# The moderator
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class DraftSignals:
    """Everything moderation looks at for one draft (built by the draft generator)."""

    text: str  # the full text as it will be published (title and description)
    business_text: str  # the words the business typed itself (keywords, own title/description)
    business_id: str
    kind: str
    category: str | None
    price: float | None
    original_price: float | None = None
    vector: np.ndarray | None = None  # embedding of ``text`` (duplicates, price history)
    media: Sequence[MediaRef] = ()
    item_id: str = ""
    ts: float = 0.0
    valid_from: float | None = None
    valid_to: float | None = None
    starts_at: float | None = None
    #: Typical price of comparable items nearby (median), when known.
    reference_price: float | None = None
    #: Regular prices of this same item in the business's recent posts.
    price_history: Sequence[float] = ()
    #: Embedding of ``business_text`` (the classifier's input: harm is in the business's own
    #: words, and template wording would dilute it); ``None`` falls back to ``vector``.
    text_vector: np.ndarray | None = None

    @property
    def classifier_input(self) -> np.ndarray | None:
        return self.text_vector if self.text_vector is not None else self.vector

    def as_recent_item(self) -> RecentItem:
        if self.vector is None:
            raise ValueError("a draft needs its embedding to enter the duplicate index")
        return RecentItem(
            item_id=self.item_id, business_id=self.business_id, vector=self.vector, ts=self.ts,
            kind=self.kind, valid_from=self.valid_from, valid_to=self.valid_to, starts_at=self.starts_at,
            free_words=len(self.business_text.split()),
        )


#: Kinds that may be free (a community notice, a free concert).
FREE_KINDS = ("event", "informative")


class Moderator:
    """Rules, duplicates, the text classifier and the media hook, combined into one verdict.

    Parameters switch parts off (``duplicates=None``, ``classifier=None``) so benchmarks can
    measure each part against the others in the same run. The classifier sends a draft to
    review at ``review_threshold`` probability of a harmful label and rejects at
    ``reject_threshold``.
    """

    def __init__(
        self,
        rules: ContentRules | None = None,
        duplicates: NearDuplicateDetector | None = None,
        classifier: TextModerationClassifier | None = None,
        media_classifier: MediaClassifier | None = None,
        media_limits: MediaLimits = MediaLimits(),
        review_threshold: float = 0.65,
        reject_threshold: float = 0.97,
        use_rules: bool = True,
    ) -> None:
        self.rules = rules if rules is not None else ContentRules()
        self.duplicates = duplicates if duplicates is not None else NearDuplicateDetector()
        self.classifier = classifier if classifier is not None else TextModerationClassifier()
        self.media_classifier = media_classifier if media_classifier is not None else NoMediaClassifier()
        self.media_limits = media_limits
        self.review_threshold = review_threshold
        self.reject_threshold = reject_threshold
        self.use_rules = use_rules
        self.use_duplicates = True
        self.use_classifier = True

    @classmethod
    def parts(cls, rules: bool = True, duplicates: bool = True, classifier: bool = True,
              **kwargs: Any) -> Moderator:
        """A moderator with only some parts on (for baselines)."""
        moderator = cls(use_rules=rules, **kwargs)
        moderator.use_duplicates = duplicates
        moderator.use_classifier = classifier
        return moderator

    def predict_one(self, draft: DraftSignals) -> Verdict:
        findings: list[Finding] = []
        scores: dict[str, float] = {}
        if self.use_rules:
            findings += self.rules.check(draft.text)
            findings += spam_findings(draft.business_text)
            findings += price_findings(draft.price, draft.original_price, draft.reference_price,
                                       free_allowed=draft.kind in FREE_KINDS)
            findings += price_history_findings(draft.price, draft.original_price, draft.price_history)
            findings += media_findings(draft.media, self.media_limits)
        for ref in draft.media:
            findings += self.media_classifier.classify(ref)
        if self.use_duplicates and draft.vector is not None:
            match = self.duplicates.predict_one(draft.as_recent_item())
            if match is not None:
                scores["duplicate_similarity"] = match.similarity
                findings.append(duplicate_finding(match))
        if self.use_classifier and draft.classifier_input is not None:
            proba = self.classifier.predict_proba_one(draft.classifier_input)
            if proba:
                harmful = {label: p for label, p in proba.items() if label != "ok"}
                label = max(harmful, key=harmful.__getitem__)
                p_bad = sum(harmful.values())
                scores["classifier_p_harmful"] = round(p_bad, 4)
                scores[f"classifier_p_{label}"] = round(harmful[label], 4)
                if p_bad >= self.review_threshold:
                    action = "reject" if p_bad >= self.reject_threshold else "review"
                    findings.append(Finding(
                        f"classifier.{label}", label, action,
                        f"text classifier: {p_bad:.0%} likely harmful, most like {label} (learned from "
                        f"{int(sum(self.classifier.counts.values()))} moderated examples)",
                        {"p_harmful": round(p_bad, 4), "label": label},
                    ))
        return combine(findings, scores)

    def learn_one(self, vector: np.ndarray, label: str, w: float = 1.0) -> bool:
        """Teach the text classifier a moderation outcome; False when the label is not about text."""
        text_label = text_label_of(label)
        if text_label is None:
            return False
        self.classifier.learn_one(vector, text_label, w=w)
        return True

    def remember(self, item: RecentItem) -> None:
        """Add a published item to the duplicate index."""
        self.duplicates.learn_one(item)


__all__ = [
    "CONTENT_LABELS",
    "ContentRules",
    "DEFAULT_LEXICONS",
    "DraftSignals",
    "DuplicateMatch",
    "Finding",
    "LABELS",
    "Lexicon",
    "MediaClassifier",
    "MediaLimits",
    "MediaRef",
    "Moderator",
    "NearDuplicateDetector",
    "NoMediaClassifier",
    "PricedItem",
    "RecentItem",
    "TEXT_LABELS",
    "TextModerationClassifier",
    "VERDICTS",
    "Verdict",
    "combine",
    "duplicate_finding",
    "media_findings",
    "price_findings",
    "price_history_findings",
    "similar_item_prices",
    "spam_findings",
    "text_label_of",
]
