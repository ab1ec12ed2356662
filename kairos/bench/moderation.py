"""``kairos bench moderation``: precision and recall of draft moderation per class, on a labelled
set the simulator generates (:mod:`kairos.simulate.drafts`), against baselines in the same run.

Drafts are generated from their keys by the same :class:`~online.event_drafts.DraftGenerator` the
API uses, embedded with MiniLM, and streamed in time order through a :class:`~online.moderation.
Moderator`. Evaluation is *prequential*: each draft is judged before anything is learned from it.
Feedback then arrives as it would in production: a moderator decides every draft sent to review
(true label), audits a share of approved drafts, users report a share of the harmful drafts that
got through, and rule-rejected drafts teach the classifier at a lower weight. Approved drafts are
published: they enter the duplicate index and the business's price history.

Configurations, all on the same drafts and feedback: ``rules`` (lexicons, spam markers, prices,
price history, media), ``rules+duplicates``, ``full`` (plus the online text classifier) and
``classifier_only`` (what the classifier learns from audits and reports alone).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Annotated, Any

import typer

from kairos.bench import emit

#: Moderation label -> benchmark class (the set's five classes).
CLASS_OF_LABEL = {"ok": "clean", "spam": "spam", "duplicate": "duplicate", "prohibited": "prohibited",
                  "violence": "prohibited", "adult": "prohibited", "hate": "prohibited",
                  "price_fraud": "price_fraud", "media": "spam"}
CONFIGS = {
    "rules": {"rules": True, "duplicates": False, "classifier": False},
    "rules+duplicates": {"rules": True, "duplicates": True, "classifier": False},
    "full": {"rules": True, "duplicates": True, "classifier": True},
    "classifier_only": {"rules": False, "duplicates": False, "classifier": True},
}


def per_class(truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class.

    >>> per_class(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])["b"]
    {'precision': 0.5, 'recall': 1.0, 'f1': 0.6667, 'support': 1, 'predicted': 2}
    """
    out = {}
    for cls in classes:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == cls and p == cls)
        n_pred = sum(1 for p in predicted if p == cls)
        n_true = sum(1 for t in truth if t == cls)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[cls] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                    "support": n_true, "predicted": n_pred}
    return out


def flag_metrics(truth: Sequence[str], verdicts: Sequence[str]) -> dict[str, float]:
    """Harmful vs clean, whatever the class: caught = reviewed or rejected.

    >>> flag_metrics(["clean", "spam", "spam"], ["approve", "review", "approve"])["harmful_caught"]
    0.5
    """
    bad = [t != "clean" for t in truth]
    flagged = [v != "approve" for v in verdicts]
    rejected = [v == "reject" for v in verdicts]
    n_bad, n_clean = sum(bad), len(bad) - sum(bad)
    caught = sum(1 for b, f in zip(bad, flagged, strict=True) if b and f)
    false_flags = sum(1 for b, f in zip(bad, flagged, strict=True) if not b and f)
    auto_bad = sum(1 for b, r in zip(bad, rejected, strict=True) if b and r)
    return {
        "harmful_caught": round(caught / n_bad, 4) if n_bad else 0.0,
        "flag_precision": round(caught / sum(flagged), 4) if sum(flagged) else 0.0,
        "clean_flagged": round(false_flags / n_clean, 4) if n_clean else 0.0,
        "clean_rejected": round(sum(1 for b, r in zip(bad, rejected, strict=True) if not b and r) / n_clean, 4)
        if n_clean else 0.0,
        "reject_precision": round(auto_bad / sum(rejected), 4) if sum(rejected) else 0.0,
        "share_to_review": round(sum(1 for v in verdicts if v == "review") / len(verdicts), 4) if verdicts else 0.0,
    }


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def keys_from_body(body: dict[str, Any]) -> Any:
    """:class:`~online.event_drafts.DraftKeys` from a ``POST /v1/events/draft`` body."""
    from online.event_drafts import DraftKeys
    from online.moderation import MediaRef

    def when(name: str) -> datetime | None:
        return datetime.fromisoformat(body[name].replace("Z", "+00:00")) if body.get(name) else None

    return DraftKeys(
        kind=body["kind"], lat=body["location"]["lat"], lon=body["location"]["lon"],
        business_id=body["business_id"], category=body.get("category"), valid_from=when("valid_from"),
        valid_to=when("valid_to"), base_price=body.get("base_price"), discount=body.get("discount"),
        original_price=body.get("original_price"), reduced_price=body.get("reduced_price"),
        price=body.get("price"), currency=body.get("currency"),
        media=tuple(MediaRef(m["url"], m.get("content_type"), m.get("size_bytes")) for m in body.get("media", [])),
        keywords=tuple(body.get("keywords", [])), title=body.get("title"), description=body.get("description"),
        business_name=body.get("business_name"), timezone=body.get("timezone"), sku=body.get("sku"),
    )


def run_benchmark(
    n_drafts: int = 1000,
    seed: int = 7,
    n_businesses: int = 60,
    history_days: int = 14,
    draft_days: int = 7,
    audit_rate: float = 0.05,
    report_rate: float = 0.5,
    report_weight: float = 0.3,
    rule_weight: float = 0.5,
    settled_ok_weight: float = 0.1,
    nearby_km: float = 3.0,
    review_threshold: float = 0.65,
    configs: Sequence[str] = tuple(CONFIGS),
) -> dict[str, Any]:
    import numpy as np

    from kairos.geo import haversine_km
    from kairos.simulate.drafts import labelled_drafts
    from online.embeddings import shared_encoder
    from online.event_drafts import DraftError, DraftGenerator
    from online.moderation import DraftSignals, PricedItem, RecentItem, similar_item_prices

    began = time.perf_counter()
    labelled = labelled_drafts(seed=seed, n_drafts=n_drafts, n_businesses=n_businesses,
                               history_days=history_days, draft_days=draft_days)
    t0 = time.perf_counter()
    encoder = shared_encoder()
    load_s = time.perf_counter() - t0

    generator = DraftGenerator(encoder)
    generated, invalid = [], Counter()
    for draft in labelled.drafts:
        try:
            generated.append(generator.generate(keys_from_body(draft.keys),
                                                datetime.fromtimestamp(draft.ts, timezone.utc),
                                                item_id=f"it-{draft.draft_id}", draft_id=draft.draft_id, embed=False))
        except DraftError as error:
            invalid[f"{draft.label}: {error}"] += 1
            generated.append(None)
    t0 = time.perf_counter()
    history_vectors = encoder.encode([h.text for h in labelled.history])
    draft_vectors = encoder.encode([g.text if g is not None else "" for g in generated])
    # The classifier reads the business's own words (templates would dilute them), as in the API.
    own_vectors = encoder.encode([g.business_text.replace("\n", ". ") if g is not None else "" for g in generated])
    encode_s = time.perf_counter() - t0
    texts_encoded = len(labelled.history) + 2 * len(generated)

    # Area reference prices from the history (same category within nearby_km), per draft.
    references: list[float | None] = []
    for gen in generated:
        if gen is None:
            references.append(None)
            continue
        prices = [h.price for h in labelled.history
                  if h.category == gen.category.category and h.price > 0
                  and haversine_km(gen.lat, gen.lon, h.lat, h.lon) <= nearby_km]
        references.append(float(statistics.median(prices)) if len(prices) >= 3 else None)

    results: dict[str, Any] = {}
    full_trace: list[tuple[str, str, str, str]] = []
    full_latency: list[float] = []
    for name in configs:
        moderator = _moderator(CONFIGS[name], review_threshold)
        rng = np.random.default_rng(seed + 1)  # the same feedback draws for every configuration
        priced: dict[str, list[PricedItem]] = {}
        for h, vector in zip(labelled.history, history_vectors, strict=True):
            priced.setdefault(h.business_id, []).append(
                PricedItem(h.item_id, h.category, h.price, vector, original_price=h.original_price))
            moderator.remember(RecentItem(h.item_id, h.business_id, vector, h.created, h.kind, h.valid_from,
                                          h.valid_to, h.starts_at, free_words=len(h.text.split())))
        truth, predicted, verdicts, subtypes = [], [], [], []
        for draft, gen, vector, own, reference in zip(labelled.drafts, generated, draft_vectors, own_vectors,
                                                      references, strict=True):
            if gen is None:
                continue
            signals = DraftSignals(
                text=gen.text, business_text=gen.business_text, business_id=gen.business_id, kind=gen.kind,
                category=gen.category.category, price=gen.prices.price, original_price=gen.prices.original_price,
                vector=vector, media=gen.media, item_id=gen.item_id, ts=draft.ts,
                valid_from=gen.valid_from.timestamp(), valid_to=gen.valid_to.timestamp(),
                starts_at=gen.starts_at.timestamp() if gen.starts_at else None, reference_price=reference,
                price_history=similar_item_prices(vector, gen.category.category, priced.get(gen.business_id, [])),
                text_vector=own if gen.business_text else None,
            )
            t0 = time.perf_counter()
            verdict = moderator.predict_one(signals)
            if name == "full":
                full_latency.append((time.perf_counter() - t0) * 1000)
            truth.append(draft.label)
            predicted.append(CLASS_OF_LABEL.get(verdict.primary_label, "spam"))
            verdicts.append(verdict.verdict)
            subtypes.append(f"{draft.label}/{draft.subtype}")
            publish = _feedback(moderator, verdict, draft, signals.classifier_input, rng, audit_rate, report_rate, report_weight,
                                rule_weight, settled_ok_weight)
            if publish:
                moderator.remember(signals.as_recent_item())
                priced.setdefault(gen.business_id, []).append(PricedItem(
                    gen.item_id, gen.category.category, gen.prices.price, vector,
                    original_price=gen.prices.original_price))
            if name == "full":
                full_trace.append((draft.label, predicted[-1], verdict.verdict, subtypes[-1]))
        classes = list(dict.fromkeys(["clean", "spam", "duplicate", "prohibited", "price_fraud"]))
        scores = per_class(truth, predicted, classes)
        results[name] = {
            "per_class": scores,
            "macro_f1": round(sum(s["f1"] for s in scores.values()) / len(scores), 4),
            "flagged": flag_metrics(truth, verdicts),
            "caught_by_subtype": _caught_by_subtype(subtypes, verdicts),
        }
        if name == "full":
            half = len(truth) // 2
            results[name]["second_half"] = {
                "per_class": per_class(truth[half:], predicted[half:], classes),
                "flagged": flag_metrics(truth[half:], verdicts[half:]),
            }
            results[name]["classifier_examples"] = round(sum(moderator.classifier.counts.values()), 2)
            results[name]["confusion"] = _confusion(truth, predicted, classes)

    new_labels = [(d.expected_category, g.category.category) for d, g in zip(labelled.drafts, generated, strict=True)
                  if g is not None and d.expected_category]
    return {
        "benchmark": "moderation",
        "command": " ".join(["kairos bench moderation --json", *(a for a in sys.argv[3:] if a != "--json")]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "set": {
            "seed": seed, "drafts": len(labelled.drafts), "counts": labelled.counts(),
            "subtypes": dict(sorted(Counter(f"{d.label}/{d.subtype}" for d in labelled.drafts).items())),
            "businesses": n_businesses, "history_items": len(labelled.history),
            "invalid_keys": dict(invalid),
        },
        "classifier_review_threshold": review_threshold,
        "feedback": {"audit_rate": audit_rate, "report_rate": report_rate, "report_weight": report_weight,
                     "rule_weight": rule_weight, "settled_ok_weight": settled_ok_weight},
        "configs": results,
        "category_from_new_labels": {
            "drafts": len(new_labels),
            "accuracy": round(sum(1 for e, g in new_labels if e == g) / len(new_labels), 4) if new_labels else None,
            "mistakes": dict(Counter(f"{e}->{g}" for e, g in new_labels if e != g)),
        },
        "timing": {
            "model_load_s": round(load_s, 2),
            "encode_s": round(encode_s, 2),
            "texts_encoded": texts_encoded,
            "encode_ms_per_text": round(encode_s / max(texts_encoded, 1) * 1000, 2),
            "moderate_ms_p50": round(statistics.median(full_latency), 3) if full_latency else None,
            "moderate_ms_p95": round(float(np.percentile(full_latency, 95)), 3) if full_latency else None,
            "total_s": round(time.perf_counter() - began, 1),
        },
    }


def _moderator(parts: dict[str, bool], review_threshold: float) -> Any:
    from online.moderation import Moderator

    return Moderator.parts(**parts, review_threshold=review_threshold)


def _feedback(moderator: Any, verdict: Any, draft: Any, vector: Any, rng: Any, audit_rate: float,
              report_rate: float, report_weight: float, rule_weight: float, settled_ok_weight: float) -> bool:
    """What happens after the verdict, as in production; returns whether the draft is published.

    An approval nobody audits or reports teaches ``ok`` at ``settled_ok_weight``, as the desk does
    once the report window passes (here at once: the benchmark has no clock for reports)."""
    truth = draft.moderation_label
    harmful = draft.label != "clean"
    if verdict.verdict == "review":
        moderator.learn_one(vector, truth)  # the moderator decides; non-text labels teach nothing
        return not harmful
    if verdict.verdict == "reject":
        ruled = any(f.code.startswith(("content.", "spam.")) and f.action == "reject" for f in verdict.findings)
        if ruled:
            moderator.learn_one(vector, verdict.primary_label, w=rule_weight)
        return False
    if rng.random() < audit_rate:  # an audited approval: a moderator looks after all
        moderator.learn_one(vector, truth)
        return not harmful
    if harmful and rng.random() < report_rate:  # users report it; agreeing reporters teach weakly
        moderator.learn_one(vector, truth, w=report_weight)
    else:
        moderator.learn_one(vector, "ok", w=settled_ok_weight)
    return True


def _caught_by_subtype(subtypes: Sequence[str], verdicts: Sequence[str]) -> dict[str, float]:
    """Share flagged (review or reject) per subtype; for clean subtypes it is the false-flag rate."""
    totals: Counter[str] = Counter(subtypes)
    flagged: Counter[str] = Counter(s for s, v in zip(subtypes, verdicts, strict=True) if v != "approve")
    return {s: round(flagged[s] / n, 3) for s, n in sorted(totals.items())}


def _confusion(truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    return {t: {p: sum(1 for a, b in zip(truth, predicted, strict=True) if a == t and b == p) for p in classes}
            for t in classes}


def register(app: typer.Typer) -> None:
    @app.command("moderation")
    def moderation(
        json_out: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
        drafts: Annotated[int, typer.Option(min=50, help="Labelled drafts to moderate.")] = 1000,
        seed: Annotated[int, typer.Option(help="Seed of the labelled set and the feedback.")] = 7,
        businesses: Annotated[int, typer.Option(min=8, help="Simulated businesses.")] = 60,
        history_days: Annotated[int, typer.Option(min=1, help="Days of item history before the drafts.")] = 14,
        draft_days: Annotated[int, typer.Option(min=1, help="Days over which drafts arrive.")] = 7,
        audit_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of approvals a moderator audits.")] = 0.05,
        report_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of harmful approvals users report.")] = 0.5,
    ) -> None:
        """Moderation precision and recall per class (clean, spam, duplicate, prohibited, price fraud)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        result = run_benchmark(n_drafts=drafts, seed=seed, n_businesses=businesses, history_days=history_days,
                               draft_days=draft_days, audit_rate=audit_rate, report_rate=report_rate)
        if json_out:
            emit(result)
            return
        for name, config in result["configs"].items():
            line = ", ".join(f"{cls} P {s['precision']:.2f} R {s['recall']:.2f}" for cls, s in config["per_class"].items())
            typer.echo(f"{name:>17}: macro-F1 {config['macro_f1']:.3f} | {line}")
        typer.echo(f"timing: {result['timing']}")
