"""Moderation parts on their own: rules, prices, media, near duplicates, the online classifier and
the combined verdict. Synthetic vectors stand in for embeddings, so no model is loaded here."""

from __future__ import annotations

import numpy as np
import pytest

from online.moderation import (
    ContentRules,
    DraftSignals,
    Finding,
    Lexicon,
    MediaLimits,
    MediaRef,
    Moderator,
    NearDuplicateDetector,
    PricedItem,
    RecentItem,
    TextModerationClassifier,
    combine,
    media_findings,
    media_kind,
    price_findings,
    price_history_findings,
    similar_item_prices,
    spam_findings,
    text_label_of,
    token_streams,
)

DIM = 16
HOUR = 3600.0


def unit(*values: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def labels(findings: list[Finding]) -> dict[str, str]:
    return {f.label: f.action for f in findings}


# -- content rules ---------------------------------------------------------------------------------

RULES = ContentRules()


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Cheap cocaine and heroin delivered", "prohibited"),
        ("Guns and ammo, bulk deal", "prohibited"),  # plural folded
        ("fake id cards while you wait", "prohibited"),
        ("Relaxing massage with a happy ending", "adult"),
        ("xxx show tonight", "adult"),
        ("we will kill them all at the match", "violence"),
        ("bomb threat prank night", "violence"),
        ("heil hitler party", "hate"),
        ("No immigrants allowed at this party", "hate"),
        ("Muslims not welcome here", "hate"),
    ],
)
def test_content_rules_reject_each_label(text: str, label: str) -> None:
    assert labels(RULES.check(text)).get(label) == "reject"


@pytest.mark.parametrize("text", ["best w33d in town", "pure c0caine", "p0rn night", "fresh m3th"])
def test_leetspeak_is_undone(text: str) -> None:
    assert RULES.check(text), text


@pytest.mark.parametrize(
    "text",
    [
        "Percussion massage gun, 30% off",
        "Murder mystery dinner on Friday",
        "Weed control for your garden",
        "Killer burgers and a double shot espresso",
        "Top Gun screening with popcorn",
        "Women only yoga class",
        "Boxing match screening, fight night",
        "Blood donation drive at the community hall",
        "Open at 4pm, 2-for-1 on ak cocktails",
    ],
)
def test_harmless_wording_is_not_flagged(text: str) -> None:
    assert RULES.check(text) == []


def test_review_terms_ask_for_a_person_and_reject_terms_win() -> None:
    assert labels(RULES.check("replica watches")) == {"prohibited": "review"}
    assert labels(RULES.check("replica watches and counterfeit bags")) == {"prohibited": "reject"}


def test_finding_names_the_terms() -> None:
    (finding,) = RULES.check("Guns for sale")
    assert finding.code == "content.prohibited"
    assert "'gun'" in finding.message and finding.evidence["terms"] == ["gun"]


def test_operators_extend_the_lexicons() -> None:
    rules = ContentRules([Lexicon("prohibited", reject=("fireworks",), exceptions=("fireworks show",))])
    assert labels(rules.check("Fireworks for sale")) == {"prohibited": "reject"}
    assert rules.check("Fireworks show at the harbour") == []
    assert rules.check("cocaine") == []  # only the lexicons given


def test_token_streams_keep_plain_words_and_undo_leetspeak() -> None:
    plain, undone = token_streams("ak47 at 4pm w33d")
    assert "ak47" in plain and "w33d" in plain
    assert "weed" in undone


# -- spam ------------------------------------------------------------------------------------------


def test_clean_business_text_is_not_spam() -> None:
    assert spam_findings("Flat white and almond croissant\nfreshly baked every morning") == []
    # Prices and times are not phone numbers.
    assert spam_findings("Now 4.00 USD instead of 5.00 USD, 18:30 to 20:00, 2026-05-01") == []


def test_one_marker_reviews_and_several_reject() -> None:
    (link,) = spam_findings("full menu at www.cheapeats.com")
    assert link.action == "review" and "link" in link.message
    (many,) = spam_findings("CLICK HERE!!! whatsapp +1 917 555 0142 to earn money")
    assert many.action == "reject"
    assert many.evidence["score"] >= 2.0


def test_shouting_is_judged_per_line_and_repetition_counts() -> None:
    (finding,) = spam_findings("hot stone massage\nHUGE SALE HUGE SALE HUGE SALE HUGE SALE")
    assert finding.action == "review"
    assert {"shouting (mostly capitals)", "repeated words"} <= set(finding.evidence["markers"])
    assert spam_findings("Hot stone massage\nBook ahead") == []


# -- prices ----------------------------------------------------------------------------------------


def test_consistent_prices_pass() -> None:
    assert price_findings(40.0, 50.0, 45.0) == []
    assert price_findings(0.0, None, 20.0, free_allowed=True) == []
    assert price_findings(None, None) == []


def test_impossible_prices_are_rejected() -> None:
    assert [f.code for f in price_findings(60.0, 50.0)] == ["price.above_original"]
    assert [f.action for f in price_findings(-1.0, None)] == ["reject"]
    assert [f.code for f in price_findings(float("nan"), None)] == ["price.invalid"]


def test_zero_price_on_a_sold_item_is_reviewed() -> None:
    assert [(f.code, f.action) for f in price_findings(0.0, None)] == [("price.zero", "review")]


def test_discount_thresholds() -> None:
    assert price_findings(20.0, 100.0) == []  # 80 % off: a real clearance
    assert [f.action for f in price_findings(10.0, 100.0)] == ["review"]  # 90 %
    assert [f.action for f in price_findings(2.0, 100.0)] == ["reject"]  # 98 %


def test_prices_against_the_area() -> None:
    assert [f.code for f in price_findings(0.5, None, 40.0)] == ["price.bait"]
    assert [f.code for f in price_findings(1000.0, None, 40.0)] == ["price.far_above_area"]
    codes = [f.code for f in price_findings(45.0, 120.0, 40.0)]  # "was 120, now 45" where 40 is usual
    assert codes == ["price.inflated_original_area"]
    assert price_findings(45.0, 60.0, 40.0) == []


def test_price_history_catches_inflated_originals() -> None:
    history = [95.0, 100.0, 105.0, 110.0]
    review = price_history_findings(95.0, 150.0, history)
    reject = price_history_findings(95.0, 250.0, history)
    assert [(f.code, f.action) for f in review] == [("price.original_above_history", "review")]
    assert [(f.code, f.action) for f in reject] == [("price.original_above_history", "reject")]
    assert "110" in review[0].message
    assert price_history_findings(80.0, 110.0, history) == []


def test_price_history_catches_discounts_that_are_not_real() -> None:
    (finding,) = price_history_findings(108.0, 155.0, [95.0, 100.0, 100.0, 160.0])
    assert finding.code == "price.no_real_discount"
    assert price_history_findings(70.0, 100.0, [95.0, 100.0, 100.0, 160.0]) == []


def test_price_history_needs_evidence_and_a_claimed_discount() -> None:
    assert price_history_findings(95.0, 250.0, [100.0, 105.0]) == []  # two observations only
    assert price_history_findings(240.0, 250.0, [100.0, 100.0, 100.0]) == []  # 4 % off claims little
    assert price_history_findings(95.0, None, [100.0, 100.0, 100.0]) == []


def test_similar_item_prices_prefers_sku_then_similar_items_of_the_category() -> None:
    massage, facial = unit(1, 0), unit(0, 1)
    near_massage = unit(1, 0.3)
    items = [
        PricedItem("a", "spa", 50.0, massage, original_price=60.0),
        PricedItem("b", "spa", 55.0, near_massage),
        PricedItem("c", "spa", 30.0, facial),
        PricedItem("d", "food", 70.0, massage),
        PricedItem("e", "spa", 99.0, facial, sku="sku-1"),
    ]
    assert similar_item_prices(massage, "spa", items) == [60.0, 55.0]  # most alike first, regular prices
    assert similar_item_prices(massage, "spa", items, limit=1) == [60.0]
    assert similar_item_prices(massage, "spa", items, sku="sku-1") == [99.0]
    assert similar_item_prices(massage, "spa", items, sku="unknown") == [60.0, 55.0]
    assert similar_item_prices(None, "spa", items) == []


# -- media -----------------------------------------------------------------------------------------


def test_good_media_pass() -> None:
    refs = [MediaRef("https://cdn.example.com/a.jpg", "image/jpeg", 200_000),
            MediaRef("https://cdn.example.com/clip.mp4", "video/mp4", 50_000_000),
            MediaRef("https://cdn.example.com/a.webp")]
    assert media_findings(refs) == []


@pytest.mark.parametrize(
    ("ref", "code", "action"),
    [
        (MediaRef("http://cdn.example.com/a.jpg"), "media.scheme", "reject"),
        (MediaRef("javascript:alert(1)"), "media.scheme", "reject"),
        (MediaRef("https://user:pw@cdn.example.com/a.jpg"), "media.credentials", "reject"),
        (MediaRef("https://localhost/a.jpg"), "media.host", "reject"),
        (MediaRef("https://192.168.1.5/a.jpg"), "media.host", "reject"),
        (MediaRef("https://cdn.example.com/app.apk"), "media.type", "reject"),
        (MediaRef("https://cdn.example.com/x", "text/html"), "media.type", "reject"),
        (MediaRef("https://cdn.example.com/x"), "media.type", "review"),
        (MediaRef("https://cdn.example.com/a.jpg", "video/mp4"), "media.type_mismatch", "review"),
        (MediaRef("https://cdn.example.com/a.jpg", "image/jpeg", 11 * 1024 * 1024), "media.size", "reject"),
    ],
)
def test_bad_media(ref: MediaRef, code: str, action: str) -> None:
    (finding,) = media_findings([ref])
    assert (finding.code, finding.action) == (code, action)
    assert finding.message.startswith("media[0]: ")


def test_media_limits_differ_for_video_and_are_configurable() -> None:
    big_video = MediaRef("https://cdn.example.com/a.mp4", None, 150 * 1024 * 1024)
    assert media_findings([big_video]) == []
    assert [f.code for f in media_findings([big_video], MediaLimits(max_video_bytes=100 * 1024 * 1024))] == ["media.size"]
    assert media_kind(MediaRef("https://x.example/a", "image/png")) == "image"
    assert media_kind(MediaRef("https://x.example/a.mov")) == "video"


class FlagEverything:
    """A stand-in image classifier: the hook's contract is findings per media link."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def classify(self, ref: MediaRef) -> list[Finding]:
        self.seen.append(ref.url)
        return [Finding("media.nudity", "adult", "reject", f"nudity in {ref.url}")]


def test_media_classifier_hook_feeds_the_verdict() -> None:
    hook = FlagEverything()
    moderator = Moderator(media_classifier=hook)
    verdict = moderator.predict_one(signals(media=(MediaRef("https://cdn.example.com/a.jpg"),)))
    assert hook.seen == ["https://cdn.example.com/a.jpg"]
    assert (verdict.verdict, verdict.primary_label) == ("reject", "adult")


# -- near duplicates -------------------------------------------------------------------------------


def item(item_id: str, business: str, vector: np.ndarray, *, ts: float = 0.0, kind: str = "offer",
         valid: tuple[float, float] | None = (0.0, 10 * HOUR), starts_at: float | None = None,
         free_words: int = 0) -> RecentItem:
    valid_from, valid_to = valid if valid else (None, None)
    return RecentItem(item_id, business, vector, ts, kind, valid_from, valid_to, starts_at, free_words)


def test_same_business_repost_while_live_is_a_duplicate() -> None:
    detector = NearDuplicateDetector(dim=DIM)
    detector.learn_one(item("i1", "b1", unit(1, 0.1)))
    match = detector.predict_one(item("d1", "b1", unit(1, 0.12), ts=HOUR, valid=(HOUR, 5 * HOUR)))
    assert match is not None and match.item_id == "i1" and match.same_business
    assert match.similarity > 0.99


def test_not_a_duplicate_when_time_differs_or_text_differs() -> None:
    detector = NearDuplicateDetector(dim=DIM)
    detector.learn_one(item("i1", "b1", unit(1, 0)))
    assert detector.predict_one(item("d1", "b1", unit(1, 0), ts=HOUR, valid=(11 * HOUR, 12 * HOUR))) is None
    assert detector.predict_one(item("d2", "b1", unit(1, 1), ts=HOUR)) is None  # 0.71 alike
    # Two slots of the same service at different times are different items.
    detector.learn_one(item("s1", "b1", unit(0, 1), kind="service", starts_at=14 * HOUR))
    assert detector.predict_one(item("d3", "b1", unit(0, 1), kind="service", starts_at=16 * HOUR)) is None
    assert detector.predict_one(item("d4", "b1", unit(0, 1), kind="service", starts_at=14.2 * HOUR)) is not None


def test_other_businesses_only_count_for_long_copied_free_text() -> None:
    detector = NearDuplicateDetector(dim=DIM)
    detector.learn_one(item("i1", "b1", unit(1, 0), free_words=3))  # "Jazz night": generic, short
    assert detector.predict_one(item("d1", "b2", unit(1, 0), free_words=3)) is None
    detector.learn_one(item("i2", "b3", unit(0, 0, 1), free_words=30))
    match = detector.predict_one(item("d2", "b4", unit(0, 0, 1), free_words=30))
    assert match is not None and not match.same_business and match.business_id == "b3"


def test_old_items_are_ignored_and_capacity_evicts_the_oldest() -> None:
    detector = NearDuplicateDetector(dim=DIM, capacity=2, max_age_s=86_400)
    detector.learn_one(item("old", "b1", unit(1, 0), ts=0.0, valid=None))
    assert detector.predict_one(item("d", "b1", unit(1, 0), ts=2 * 86_400, valid=None)) is None
    detector.learn_one(item("i2", "b1", unit(0, 1), valid=None))
    detector.learn_one(item("i3", "b1", unit(0, 0, 1), valid=None))
    assert len(detector) == 2 and "old" not in detector and "i3" in detector


def test_learning_an_id_again_replaces_it_and_forget_removes_it() -> None:
    detector = NearDuplicateDetector(dim=DIM)
    detector.learn_one(item("i1", "b1", unit(1, 0)))
    detector.learn_one(item("i1", "b1", unit(0, 1)))
    assert len(detector) == 1
    assert detector.predict_one(item("d", "b1", unit(1, 0))) is None
    assert detector.predict_one(item("d", "b1", unit(0, 1))) is not None
    detector.forget("i1")
    assert detector.predict_one(item("d", "b1", unit(0, 1))) is None


def test_wrong_dimension_is_an_error() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        NearDuplicateDetector(dim=DIM).learn_one(item("i1", "b1", np.ones(3, dtype=np.float32)))


# -- classifier ------------------------------------------------------------------------------------


def clusters(seed: int, n: int) -> list[tuple[np.ndarray, str]]:
    """Clean texts near one direction, spam near another, adult near a third (with noise)."""
    rng = np.random.default_rng(seed)
    centres = {"ok": unit(1, 0.2), "spam": unit(0.2, 1), "adult": unit(0, 0.2, 1)}
    out = []
    for i in range(n):
        label = ("ok", "ok", "spam", "adult")[i % 4]
        v = centres[label] + rng.normal(0, 0.15, DIM).astype(np.float32)
        out.append((v / np.linalg.norm(v), label))
    return out


def test_classifier_abstains_until_it_has_seen_enough() -> None:
    clf = TextModerationClassifier(min_examples=5)
    assert clf.predict_proba_one(unit(1)) == {} and clf.predict_one(unit(1)) is None
    for vector, label in clusters(0, 12):  # 6 ok, 3 spam, 3 adult
        if label != "ok" or clf.counts["ok"] < 4:
            clf.learn_one(vector, label)
    assert clf.counts["ok"] == 4 and not clf.ready
    clf.learn_one(unit(1, 0.2), "ok", w=0.5)
    assert not clf.ready  # 4.5 by weight
    clf.learn_one(unit(1, 0.2), "ok", w=0.5)
    assert clf.ready and set(clf.predict_proba_one(unit(1))) == {"ok", "spam", "adult"}


def test_classifier_learns_harm_and_names_it() -> None:
    clf = TextModerationClassifier(min_examples=5)
    for vector, label in clusters(1, 200):
        clf.learn_one(vector, label)
    test = clusters(2, 40)
    predicted = [clf.predict_one(v) for v, _ in test]
    accuracy = np.mean([p == y for p, (_, y) in zip(predicted, test, strict=True)])
    assert accuracy >= 0.9
    proba = clf.predict_proba_one(test[2][0])  # a spam one
    assert pytest.approx(sum(proba.values())) == 1.0
    assert max(proba, key=proba.__getitem__) == "spam"


def test_classifier_weights_and_labels() -> None:
    clf = TextModerationClassifier()
    clf.learn_one(unit(1), "spam", w=0.3)
    assert clf.counts["spam"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown label"):
        clf.learn_one(unit(1), "duplicate")
    with pytest.raises(ValueError, match="'ok'"):
        TextModerationClassifier(labels=("spam",))
    assert text_label_of("duplicate") is None and text_label_of("price_fraud") is None
    assert text_label_of("adult") == "adult"


# -- the moderator ---------------------------------------------------------------------------------


def signals(**changes: object) -> DraftSignals:
    values: dict[str, object] = {
        "text": "20% off latte & pastry — Blue Bean offers 20% off latte & pastry.",
        "business_text": "latte pastry",
        "business_id": "b1",
        "kind": "offer",
        "category": "coffee",
        "price": 4.0,
        "original_price": 5.0,
        "vector": unit(1, 0.1),
        "item_id": "d1",
        "ts": HOUR,
        "valid_from": HOUR,
        "valid_to": 5 * HOUR,
    }
    values.update(changes)
    return DraftSignals(**values)  # type: ignore[arg-type]


def moderator(dim: int = DIM, **kwargs: object) -> Moderator:
    return Moderator(duplicates=NearDuplicateDetector(dim=dim), classifier=TextModerationClassifier(min_examples=5),
                     **kwargs)  # type: ignore[arg-type]


def test_clean_draft_is_approved_with_no_reasons() -> None:
    verdict = moderator().predict_one(signals())
    assert verdict.verdict == "approve" and verdict.findings == () and verdict.primary_label == "ok"


def test_harshest_finding_decides_and_worst_harm_is_named_first() -> None:
    m = moderator()
    m.remember(item("i1", "b1", unit(1, 0.1)))
    verdict = m.predict_one(signals(text="cheap cocaine", price=4.0, original_price=3.0))
    assert verdict.verdict == "reject"
    assert verdict.primary_label == "prohibited"  # price_fraud also rejects; prohibited is named first
    assert {f.label for f in verdict.findings} == {"prohibited", "price_fraud", "duplicate"}
    assert verdict.findings[0].action == "reject" and verdict.findings[-1].action == "review"
    assert verdict.scores["duplicate_similarity"] > 0.99


def test_parts_can_be_switched_off() -> None:
    m = Moderator.parts(rules=False, duplicates=False, classifier=False)
    assert m.predict_one(signals(text="cheap cocaine", vector=np.ones(384, dtype=np.float32))).verdict == "approve"


def test_classifier_sends_to_review_once_trained_and_learn_one_skips_non_text_labels() -> None:
    m = moderator(review_threshold=0.5, reject_threshold=0.999)
    for vector, label in clusters(3, 200):
        assert m.learn_one(vector, label)
    assert m.learn_one(unit(1), "duplicate") is False and m.learn_one(unit(1), "price_fraud") is False
    spam_like = clusters(4, 3)[2][0]
    verdict = m.predict_one(signals(vector=spam_like))
    assert verdict.verdict == "review"
    (finding,) = verdict.findings
    assert finding.code == "classifier.spam" and finding.label == "spam"
    assert verdict.scores["classifier_p_harmful"] >= 0.5
    assert m.predict_one(signals(vector=clusters(5, 1)[0][0])).verdict == "approve"


def test_combine_of_nothing_approves() -> None:
    assert combine([]).verdict == "approve"
    review = Finding("x", "spam", "review", "m")
    assert combine([review]).verdict == "review"
