"""Moderation for admins (queue, decisions, suspensions) and the moderation desk that the events
and reports routes share.

The :class:`ModerationDesk` is the one place that applies moderation policy: it drafts and
moderates events, publishes approved drafts to the event store, takes user reports (thresholds
move items to review and queue users), records moderators' decisions (strikes, suspensions) and
teaches the text classifier from decisions and reports. It keeps its state in
:class:`~kairos.stores.moderation_store.ModerationStore`; on start it rebuilds the classifier by
replaying the stored labelled examples and refills the duplicate index with recently published
items, so a restart loses nothing.

Admin routes are open for now: API keys with scopes arrive with issue #6 and will guard them.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from kairos.stores.catalog import CatalogItem
from kairos.stores.moderation_store import (
    DraftRecord,
    DuplicateReport,
    ItemRecord,
    ModerationStore,
    QueueEntry,
    Suspension,
    open_moderation_store,
)
from online.event_drafts import (
    DraftError,
    DraftGenerator,
    DraftKeys,
    GeneratedDraft,
    PhraseBank,
    item_outcomes,
)
from online.moderation import (
    CONTENT_LABELS,
    LABELS,
    DraftSignals,
    MediaLimits,
    Moderator,
    NearDuplicateDetector,
    PricedItem,
    RecentItem,
    TextModerationClassifier,
    Verdict,
    similar_item_prices,
    text_label_of,
)
from serving.deps import Services, ServicesDep
from serving.errors import ApiError
from serving.schemas import ERROR_RESPONSES, USER_ID_PATTERN, ErrorResponse

log = logging.getLogger(__name__)

DAY_S = 86_400.0
#: Why a user may report an item or another user.
REPORT_REASONS = ("spam", "scam", "prohibited", "violence", "adult", "hate", "harassment", "fake", "other")
#: Reasons serious enough that fewer reporters move an item to review.
SEVERE_REASONS = ("prohibited", "violence", "adult", "hate")
#: Report reason -> moderation label (what a moderator would call it).
REASON_LABELS = {"spam": "spam", "scam": "spam", "prohibited": "prohibited", "violence": "violence",
                 "adult": "adult", "hate": "hate"}
#: The collection item reports are appended to (decoded as ``report`` events).
REPORTS_COLLECTION = "interactions"
#: Decisions a moderator may take, per kind of queue entry.
ACTIONS = {"draft": ("approve", "reject"), "item": ("approve", "reject"), "user": ("dismiss", "suspend")}

MODERATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {"model": ErrorResponse, "description": "the account is suspended or does not own the resource"},
    409: {"model": ErrorResponse, "description": "the resource is not in a state that allows this"},
}


def _setting(settings: Any, name: str, default: Any) -> Any:
    """A moderation setting from :class:`~kairos.config.Settings` once it has the field (the
    ``KAIROS_*`` variable), else the default given here."""
    return getattr(settings, name, default)


@dataclass
class ReportOutcome:
    report_id: str
    distinct_reporters: int
    threshold: int
    action: str  # none | item_in_review | queued_for_review
    queue_id: str | None


@dataclass
class DecisionOutcome:
    decision_id: str
    entry: QueueEntry
    action: str
    label: str | None
    learned: bool
    effects: list[str] = field(default_factory=list)


class ModerationDesk:
    """Drafting, moderation, publishing, reports and decisions over the shared services.

    Policy knobs are constructor parameters (the lead maps them to ``KAIROS_*`` settings):
    classifier thresholds, how many distinct reporters move an item to review
    (``severe_report_threshold`` for prohibited/violence/adult/hate reports), how many reporters
    queue a user, and how many strikes within ``strike_window_days`` suspend an account.
    """

    def __init__(
        self,
        services: Services,
        *,
        store: ModerationStore | None = None,
        encoder: Any = None,
        clock: Callable[[], float] = time.time,
        review_threshold: float = 0.65,
        reject_threshold: float = 0.97,
        classifier_min_examples: int = 20,
        item_report_threshold: int = 3,
        severe_report_threshold: int = 2,
        user_report_threshold: int = 3,
        report_window_days: float = 7.0,
        strikes_to_suspend: int = 3,
        strike_window_days: float = 30.0,
        report_weight: float = 0.3,
        rule_weight: float = 0.5,
        settled_ok_weight: float = 0.1,
        nearby_km: float = 3.0,
        min_comparables: int = 3,
        history_days: float = 30.0,
        max_business_items: int = 60,
        phrase_refresh_s: float = 900.0,
        media_limits: MediaLimits | None = None,
    ) -> None:
        self.services = services
        self.store = store if store is not None else open_moderation_store(services.settings)
        self._encoder = encoder
        self.clock = clock
        self.item_report_threshold = item_report_threshold
        self.severe_report_threshold = severe_report_threshold
        self.user_report_threshold = user_report_threshold
        self.report_window_s = report_window_days * DAY_S
        self.strikes_to_suspend = strikes_to_suspend
        self.strike_window_s = strike_window_days * DAY_S
        self.report_weight = report_weight
        self.rule_weight = rule_weight
        self.settled_ok_weight = settled_ok_weight
        self.nearby_km = nearby_km
        self.min_comparables = min_comparables
        self.history_s = history_days * DAY_S
        self.max_business_items = max_business_items
        self.phrase_refresh_s = phrase_refresh_s
        self.moderator = Moderator(
            duplicates=NearDuplicateDetector(),
            classifier=TextModerationClassifier(min_examples=classifier_min_examples),
            review_threshold=review_threshold,
            reject_threshold=reject_threshold,
            media_limits=media_limits or MediaLimits(),
        )
        # River models and the duplicate index are not thread-safe; FastAPI runs sync routes in a
        # thread pool. Moderation is milliseconds; encoding happens outside the lock.
        self._lock = threading.RLock()
        self._phrases: PhraseBank | None = None
        self._phrases_at = 0.0
        self._generator: DraftGenerator | None = None
        self._restore()

    @classmethod
    def from_services(cls, services: Services) -> ModerationDesk:
        s = services.settings
        return cls(
            services,
            review_threshold=_setting(s, "moderation_review_threshold", 0.65),
            reject_threshold=_setting(s, "moderation_reject_threshold", 0.97),
            item_report_threshold=_setting(s, "report_threshold", 3),
            severe_report_threshold=_setting(s, "severe_report_threshold", 2),
            user_report_threshold=_setting(s, "user_report_threshold", 3),
            strikes_to_suspend=_setting(s, "strikes_to_suspend", 3),
            media_limits=MediaLimits(
                max_image_bytes=int(_setting(s, "media_max_image_mb", 10) * 1024 * 1024),
                max_video_bytes=int(_setting(s, "media_max_video_mb", 200) * 1024 * 1024),
            ),
        )

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from online.embeddings import shared_encoder

            self._encoder = shared_encoder(self.services.settings)
        return self._encoder

    def close(self) -> None:
        self.store.close()

    def _restore(self) -> None:
        """Rebuild learned state from the store: classifier examples, recent published items."""
        replayed = 0
        for vector, label, weight, _source in self.store.examples():
            if vector is not None and label in self.moderator.classifier.labels:
                self.moderator.classifier.learn_one(vector, label, w=weight)
                replayed += 1
        since = self.clock() - self.moderator.duplicates.max_age_s
        for item in self.store.published_items(since):
            if item.status != "removed" and item.vector is not None:
                self.moderator.remember(_recent(item))
        if replayed:
            log.info("moderation classifier rebuilt from %d stored examples", replayed)

    # ---- drafting ----------------------------------------------------------------------------

    def phrase_bank(self) -> PhraseBank | None:
        """Wording learned from the offline log, rebuilt every ``phrase_refresh_s``."""
        now = self.clock()
        if self._phrases is None or now - self._phrases_at > self.phrase_refresh_s:
            try:
                from kairos.stores.offline_log import OfflineLog

                events = OfflineLog(self.services.settings.offline_dir).read_events()
                self._phrases = PhraseBank().learn_many(item_outcomes(events))
            except Exception:  # wording is an enrichment; a broken log must not stop drafting
                log.warning("could not learn wording from the offline log", exc_info=True)
                self._phrases = self._phrases or PhraseBank()
            self._phrases_at = now
        return self._phrases

    def draft(self, keys: DraftKeys) -> tuple[DraftRecord, GeneratedDraft, Verdict]:
        now = self.clock()
        self._refuse_suspended("business", keys.business_id, "draft events")
        self.settle(now)
        draft_id = f"dr-{_token()}"
        item_id = f"it-{_token()}"
        nearby = self._nearby_items(keys, now)
        if self._generator is None:
            self._generator = DraftGenerator(self.encoder, None, self.services.settings.h3_resolution)
        generator = self._generator
        generator.phrase_bank = self.phrase_bank()
        try:
            draft = generator.generate(keys, datetime.fromtimestamp(now, UTC), item_id, draft_id,
                                       currency=_usual_currency(nearby))
        except DraftError as error:
            raise ApiError(422, str(error), [{"field": error.field, "message": error.message,
                                              "type": "value_error"}]) from None
        business_items = self._business_items(keys.business_id, now)
        reference = _reference_price(nearby, draft.category.category, self.min_comparables)
        priced = [PricedItem(i.item_id, i.category, i.price, i.vector, i.sku, i.original_price)
                  for i in business_items]
        history = similar_item_prices(draft.vector, draft.category.category, priced, sku=keys.sku)
        signals = DraftSignals(
            text=draft.text, business_text=draft.business_text, business_id=keys.business_id, kind=draft.kind,
            category=draft.category.category, price=draft.prices.price,
            original_price=draft.prices.original_price, vector=draft.vector, media=draft.media,
            item_id=item_id, ts=now, valid_from=draft.valid_from.timestamp(),
            valid_to=draft.valid_to.timestamp(),
            starts_at=draft.starts_at.timestamp() if draft.starts_at else None,
            reference_price=reference, price_history=history, text_vector=draft.text_vector,
        )
        with self._lock:
            for item in business_items:
                if item.vector is not None and item.item_id not in self.moderator.duplicates:
                    self.moderator.remember(_recent(item))
            verdict = self.moderator.predict_one(signals)
        status = {"approve": "approved", "review": "pending_review", "reject": "rejected"}[verdict.verdict]
        record = DraftRecord(
            draft_id=draft_id, business_id=keys.business_id, item_id=item_id, collection=draft.collection,
            created_ts=now, status=status, verdict=verdict.verdict, findings=[f.as_dict() for f in verdict.findings],
            document=draft.document, summary=_summary(draft, verdict, reference, history), vector=draft.vector,
            published_ts=None, position=None, text_vector=draft.text_vector,
        )
        self.store.save_draft(record)
        if verdict.verdict == "review":
            self.store.open_entry("draft", draft_id, "; ".join(verdict.reasons)[:500], "moderation", now,
                                  business_id=keys.business_id)
        elif verdict.verdict == "reject":
            self._learn_from_rules(draft, verdict, now)
            if verdict.primary_label in CONTENT_LABELS:
                self._strike("business", keys.business_id, f"draft {draft_id} rejected: {verdict.primary_label}", now)
        return record, draft, verdict

    def settle(self, now: float | None = None) -> int:
        """Published items that went through the report window without complaint (live, no report)
        teach the classifier ``ok`` at ``settled_ok_weight``: the platform's everyday text is what
        the classifier must not flag, and no moderator labels it. Returns how many were learned."""
        now = self.clock() if now is None else now
        learned = 0
        for item in self.store.unsettled_items(now - self.report_window_s):
            if item.status == "live" and not self.store.reports_on("item", item.item_id):
                vector = item.text_vector if item.text_vector is not None else item.vector
                learned += self._learn(vector, "ok", self.settled_ok_weight, "settled", now)
            self.store.mark_settled(item.item_id)
        return learned

    def _learn_from_rules(self, draft: GeneratedDraft, verdict: Verdict, now: float) -> None:
        """A draft the rules rejected for its words teaches the classifier that neighbourhood
        (paraphrases the lexicon lacks), at ``rule_weight``: weak supervision, not a person."""
        label = text_label_of(verdict.primary_label)
        ruled = any(f.code.startswith(("content.", "spam.")) and f.action == "reject" for f in verdict.findings)
        vector = draft.text_vector if draft.text_vector is not None else draft.vector
        if label is None or label == "ok" or not ruled or vector is None or self.rule_weight <= 0:
            return
        self._learn(vector, label, self.rule_weight, "rules", now)

    def _learn(self, vector: Any, label: str, weight: float, source: str, now: float) -> bool:
        text_label = text_label_of(label)
        if text_label is None or vector is None:
            return False
        with self._lock:
            self.moderator.learn_one(vector, text_label, w=weight)
        self.store.add_example(vector, text_label, weight, source, now)
        return True

    def _nearby_items(self, keys: DraftKeys, now: float) -> list[CatalogItem]:
        try:
            at = datetime.fromtimestamp(now, UTC)
            return self.services.catalog.near(keys.lat, keys.lon, self.nearby_km, at=at, limit=2000)
        except Exception:
            log.warning("catalog lookup near %.4f,%.4f failed", keys.lat, keys.lon, exc_info=True)
            return []

    def _business_items(self, business_id: str, now: float) -> list[ItemRecord]:
        """The business's recent items with embeddings: Kairos-published ones from the store,
        the rest from the catalog (their text encoded now; the encoder caches repeats)."""
        known = {i.item_id: i for i in self.store.items_of(business_id) if i.vector is not None}
        try:
            catalog = [c for c in self.services.catalog.by_business(business_id)
                       if not c.deleted and c.updated_ts >= now - self.history_s and c.item_id not in known]
        except Exception:
            log.warning("catalog lookup of business %s failed", business_id, exc_info=True)
            catalog = []
        catalog.sort(key=lambda c: c.updated_ts, reverse=True)
        catalog = catalog[: self.max_business_items]
        texts = [c.text or c.title or "" for c in catalog]
        vectors = self.encoder.encode(texts) if texts else []
        items = list(known.values())
        for item, text, vector in zip(catalog, texts, vectors, strict=True):
            attrs = item.attrs if isinstance(item.attrs, dict) else {}
            items.append(ItemRecord(
                item_id=item.item_id, business_id=business_id, status="live", reason=None,
                updated_ts=item.updated_ts, category=item.category, kind=item.kind, price=item.price,
                original_price=item.original_price, sku=attrs.get("sku"), text=text, vector=vector,
                published_ts=item.updated_ts, valid_from=item.valid_from, valid_to=item.valid_to,
                starts_at=_epoch(attrs.get("starts_at")),
            ))
        return items

    # ---- publishing ----------------------------------------------------------------------------

    def get_draft(self, draft_id: str, business_id: str) -> DraftRecord:
        record = self.store.get_draft(draft_id)
        if record is None:
            raise ApiError(404, f"unknown draft {draft_id!r}")
        if record.business_id != business_id:
            raise ApiError(403, f"draft {draft_id!r} belongs to another business")
        return record

    def publish(self, draft_id: str, business_id: str) -> tuple[DraftRecord, str, dict[str, Any]]:
        now = self.clock()
        record = self.get_draft(draft_id, business_id)
        self._refuse_suspended("business", business_id, "publish events")
        if record.status == "published":
            raise ApiError(409, f"draft {draft_id!r} is already published as item {record.item_id!r}")
        if record.status == "pending_review":
            raise ApiError(409, f"draft {draft_id!r} is waiting for a moderator; publish it once approved")
        if record.status == "rejected":
            reasons = "; ".join(f["message"] for f in record.findings) or "rejected by a moderator"
            raise ApiError(409, f"draft {draft_id!r} was rejected: {reasons}")
        valid_to = _epoch(record.document.get("ends"))
        if valid_to is not None and valid_to <= now:
            raise ApiError(409, f"draft {draft_id!r} ended at {record.document['ends']}; draft it again")
        if not self.store.claim_draft(draft_id, "approved", "published", now):
            raise ApiError(409, f"draft {draft_id!r} is being published by another request")
        document = {**record.document, "created_at": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            (position,) = self.services.event_store.append(record.collection, [document])
        except Exception:
            log.error("publishing draft %s failed", draft_id, exc_info=True)
            self.store.set_draft_status(draft_id, "approved")  # nothing was appended: it may be retried
            raise ApiError(503, "could not publish: the event store is not answering") from None
        self.store.set_draft_status(draft_id, "published", published_ts=now, position=position)
        item = ItemRecord(
            item_id=record.item_id, business_id=business_id, status="live", reason=None, updated_ts=now,
            draft_id=draft_id, collection=record.collection, category=document.get("category"),
            kind=document.get("item_kind"), price=document.get("price"),
            original_price=document.get("original_price"), sku=document.get("sku"),
            text=f"{document.get('title', '')} — {document.get('description', '')}", vector=record.vector,
            text_vector=record.text_vector,
            published_ts=now, valid_from=_epoch(document.get("starts")), valid_to=valid_to,
            starts_at=_epoch(document.get("event_start")),
            free_words=int(record.summary.get("own_words", 0)),
        )
        self.store.upsert_item(item)
        if record.vector is not None:
            with self._lock:
                self.moderator.remember(_recent(item))
        return self.store.get_draft(draft_id) or record, position, document

    # ---- reports -------------------------------------------------------------------------------

    def report(self, reporter_id: str, target_type: str, target_id: str, reason: str,
               details: str | None) -> ReportOutcome:
        now = self.clock()
        self._refuse_suspended("user", reporter_id, "report")
        if target_type == "user" and target_id == reporter_id:
            raise ApiError(422, "target_id: users cannot report themselves",
                           [{"field": "target_id", "message": "is the reporter", "type": "value_error"}])
        business_id = self._require_target(target_type, target_id)
        try:
            report = self.store.add_report(reporter_id, target_type, target_id, reason, details, now)
        except DuplicateReport:
            raise ApiError(409, f"{reporter_id!r} already reported {target_type} {target_id!r}") from None
        if target_type == "item":
            self._append_report_event(report.report_id, reporter_id, target_id, reason, now)
        recent = self.store.reports_on(target_type, target_id, since_ts=now - self.report_window_s)
        live = [r for r in recent if r.status != "dismissed"]
        reporters = {r.reporter_id for r in live}
        severe = sum(1 for r in live if r.reason in SEVERE_REASONS)
        if target_type == "user":
            threshold = self.user_report_threshold
        else:
            threshold = self.severe_report_threshold if severe >= self.severe_report_threshold \
                else self.item_report_threshold
        outcome = ReportOutcome(report.report_id, len(reporters), threshold, "none", None)
        if len(reporters) < threshold:
            return outcome
        reasons = Counter(r.reason for r in live)
        summary = ", ".join(f"{n} x {why}" for why, n in reasons.most_common())
        if target_type == "item":
            existing = self.store.get_item(target_id)
            if existing is not None and existing.status == "removed":
                return outcome  # already taken down by a moderator
            if existing is None or existing.status == "live":
                self.store.set_item_status(target_id, business_id or "", "review",
                                           reason=f"{len(reporters)} reports: {summary}", ts=now)
            entry, created = self.store.open_entry("item", target_id, f"{len(reporters)} reports: {summary}",
                                                   "reports", now, business_id=business_id)
            outcome.action, outcome.queue_id = "item_in_review", entry.queue_id
            if created:
                self._learn_from_reports(target_id, reasons, now)
        else:
            entry, _ = self.store.open_entry("user", target_id, f"{len(reporters)} reports: {summary}",
                                             "reports", now)
            outcome.action, outcome.queue_id = "queued_for_review", entry.queue_id
        return outcome

    def _append_report_event(self, report_id: str, reporter_id: str, item_id: str, reason: str, now: float) -> None:
        """Everything that happens is an event: an item report also goes to the event store as a
        ``report`` interaction (the ``interactions`` mapping decodes ``action: report``). The
        moderation store already holds the report, so a failing append is logged, not raised."""
        document = {"_id": report_id, "user_id": reporter_id, "item_id": item_id, "action": "report",
                    "ts": _iso(now), "reason": reason, "source": "api"}
        try:
            self.services.event_store.append(REPORTS_COLLECTION, [document])
        except Exception:
            log.warning("appending report %s to the event store failed", report_id, exc_info=True)

    def _learn_from_reports(self, item_id: str, reasons: Counter[str], now: float) -> None:
        """Reporters agreeing (the threshold was reached) teach the classifier, at ``report_weight``."""
        top, _ = reasons.most_common(1)[0]
        label = REASON_LABELS.get(top)
        if label is None:
            return
        vector = self._item_vector(item_id)
        if vector is not None:
            self._learn(vector, label, self.report_weight, "reports", now)

    def _item_vector(self, item_id: str) -> Any:
        """What the classifier learns an item from: the business's own words when Kairos drafted
        it, else the item's whole text (written by the business)."""
        stored = self.store.get_item(item_id)
        if stored is not None and stored.text_vector is not None:
            return stored.text_vector
        if stored is not None and stored.vector is not None:
            return stored.vector
        item = self.services.catalog.get(item_id)
        text = (item.text or item.title) if item is not None else None
        return self.encoder.encode([text])[0] if text else None

    def _require_target(self, target_type: str, target_id: str) -> str | None:
        """The owning business of an item target; 404 when the target is unknown."""
        if target_type == "item":
            stored = self.store.get_item(target_id)
            if stored is not None:
                return stored.business_id
            try:
                item = self.services.catalog.get(target_id)
            except Exception:
                log.error("catalog read failed for %s", target_id, exc_info=True)
                raise ApiError(503, "the catalog is not answering; try again shortly") from None
            if item is None:
                raise ApiError(404, f"unknown item {target_id!r}")
            return item.business_id
        try:
            row = self.services.features.read_one("user_activity", {"user_id": target_id})
        except Exception:
            log.error("user_activity read failed for %s", target_id, exc_info=True)
            raise ApiError(503, "the feature store is not answering; try again shortly") from None
        if row is None and self.store.suspension("user", target_id) is None:
            raise ApiError(404, f"unknown user {target_id!r}")
        return None

    # ---- decisions -----------------------------------------------------------------------------

    def decide(self, queue_id: str, action: str, label: str | None, moderator: str, note: str | None,
               suspend_days: float | None = None) -> DecisionOutcome:
        now = self.clock()
        entry = self.store.get_entry(queue_id)
        if entry is None:
            raise ApiError(404, f"unknown queue entry {queue_id!r}")
        if entry.status != "open":
            raise ApiError(409, f"queue entry {queue_id!r} is already decided")
        allowed = ACTIONS[entry.target_type]
        if action not in allowed:
            raise ApiError(422, f"action: a {entry.target_type} entry takes {' or '.join(allowed)}, not {action!r}",
                           [{"field": "action", "message": f"must be one of {list(allowed)}", "type": "enum"}])
        if not self.store.close_entry(queue_id, now):
            raise ApiError(409, f"queue entry {queue_id!r} is already decided")
        effects: list[str] = []
        learned = False
        business = entry.business_id
        if entry.target_type == "draft":
            draft = self.store.get_draft(entry.target_id)
            vector = None if draft is None else draft.text_vector if draft.text_vector is not None else draft.vector
            if action == "approve":
                self.store.set_draft_status(entry.target_id, "approved")
                effects.append("draft approved: the business can publish it")
                learned = self._learn(vector, "ok", 1.0, "decision", now)
            else:
                label = label or _draft_label(draft)
                self.store.set_draft_status(entry.target_id, "rejected")
                effects.append("draft rejected")
                learned = self._learn(vector, label or "", 1.0, "decision", now)
                effects += self._strike("business", business or "", f"draft {entry.target_id} rejected: {label}", now)
        elif entry.target_type == "item":
            vector = self._item_vector(entry.target_id)
            stored = self.store.get_item(entry.target_id)
            owner = business or (stored.business_id if stored is not None else "")
            if action == "approve":
                self.store.set_item_status(entry.target_id, owner, "live", reason="kept by a moderator", ts=now)
                dismissed = self.store.resolve_reports("item", entry.target_id, "dismissed")
                effects.append(f"item live again; {dismissed} report(s) dismissed")
                learned = self._learn(vector, "ok", 1.0, "decision", now)
            else:
                label = label or _report_label(self.store.reports_on("item", entry.target_id))
                self.store.set_item_status(entry.target_id, owner, "removed", reason=f"removed: {label}", ts=now)
                upheld = self.store.resolve_reports("item", entry.target_id, "upheld")
                effects.append(f"item removed from suggestions; {upheld} report(s) upheld")
                learned = self._learn(vector, label or "", 1.0, "decision", now)
                with self._lock:
                    self.moderator.duplicates.forget(entry.target_id)
                effects += self._strike("business", owner, f"item {entry.target_id} removed: {label}", now)
        else:
            if action == "dismiss":
                dismissed = self.store.resolve_reports("user", entry.target_id, "dismissed")
                effects.append(f"{dismissed} report(s) dismissed")
            else:
                upheld = self.store.resolve_reports("user", entry.target_id, "upheld")
                until = now + suspend_days * DAY_S if suspend_days else None
                self.store.suspend("user", entry.target_id, note or f"suspended by {moderator}", now, until)
                effects.append(f"user suspended{' until ' + _iso(until) if until else ''}; {upheld} report(s) upheld")
                self.store.add_strike("user", entry.target_id, f"suspended by {moderator}", now)
        decision = self.store.add_decision(entry, action, label, moderator, note, now)
        return DecisionOutcome(decision.decision_id, entry, action, label, learned, effects)

    def _strike(self, actor_type: str, actor_id: str, reason: str, now: float) -> list[str]:
        """Record a strike; enough of them within the window suspend the account."""
        if not actor_id:
            return []
        self.store.add_strike(actor_type, actor_id, reason, now)
        strikes = self.store.strikes(actor_type, actor_id, now - self.strike_window_s)
        if strikes >= self.strikes_to_suspend and self.store.suspension(actor_type, actor_id, now) is None:
            days = self.strike_window_s / DAY_S
            self.store.suspend(actor_type, actor_id, f"{strikes} strikes in {days:g} days (last: {reason})", now)
            return [f"{actor_type} {actor_id} suspended after {strikes} strikes"]
        return [f"strike {strikes} of {self.strikes_to_suspend} for {actor_type} {actor_id}"]

    def _refuse_suspended(self, actor_type: str, actor_id: str, what: str) -> None:
        suspension = self.store.suspension(actor_type, actor_id, self.clock())
        if suspension is not None:
            raise ApiError(403, f"{actor_type} {actor_id!r} is suspended and cannot {what}: {suspension.reason}")

    def suspend(self, actor_type: str, actor_id: str, reason: str, days: float | None) -> Suspension:
        now = self.clock()
        self.store.suspend(actor_type, actor_id, reason, now, now + days * DAY_S if days else None)
        suspension = self.store.suspension(actor_type, actor_id)
        assert suspension is not None
        return suspension

    def queue_entries(self, status: str, target_type: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        out = []
        for entry in self.store.queue(status, target_type, limit, offset):
            out.append({**_entry_dict(entry), "reports": dict(Counter(
                r.reason for r in self.store.reports_on(entry.target_type, entry.target_id)
            ) if entry.target_type != "draft" else {}), "subject": self._subject(entry)})
        return out

    def _subject(self, entry: QueueEntry) -> dict[str, Any]:
        """What a moderator needs to see to decide."""
        if entry.target_type == "draft":
            draft = self.store.get_draft(entry.target_id)
            if draft is None:
                return {}
            return {"title": draft.document.get("title"), "description": draft.document.get("description"),
                    "business_id": draft.business_id, "verdict": draft.verdict, "findings": draft.findings,
                    "price": draft.document.get("price"), "original_price": draft.document.get("original_price")}
        if entry.target_type == "item":
            item = self.services.catalog.get(entry.target_id)
            stored = self.store.get_item(entry.target_id)
            return {"title": item.title if item else None, "text": item.text if item else (stored.text if stored else None),
                    "business_id": (item.business_id if item else stored.business_id if stored else None),
                    "status": stored.status if stored else "live"}
        return {"user_id": entry.target_id, "strikes": self.store.strikes("user", entry.target_id, 0.0)}


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _token() -> str:
    import uuid

    return uuid.uuid4().hex[:16]


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _recent(item: ItemRecord) -> RecentItem:
    assert item.vector is not None
    return RecentItem(item_id=item.item_id, business_id=item.business_id, vector=item.vector,
                      ts=item.published_ts or item.updated_ts, kind=item.kind or "offer", valid_from=item.valid_from,
                      valid_to=item.valid_to, starts_at=item.starts_at, free_words=item.free_words)


def _reference_price(nearby: list[CatalogItem], category: str, min_comparables: int) -> float | None:
    prices = [i.price for i in nearby if i.category == category and i.price is not None and i.price > 0]
    return float(statistics.median(prices)) if len(prices) >= min_comparables else None


def _usual_currency(nearby: list[CatalogItem]) -> str | None:
    found = Counter(i.currency for i in nearby if i.currency)
    return found.most_common(1)[0][0] if found else None


def _draft_label(draft: DraftRecord | None) -> str | None:
    if draft is None or not draft.findings:
        return None
    return draft.findings[0].get("label")


def _report_label(reports: list[Any]) -> str | None:
    reasons = Counter(REASON_LABELS.get(r.reason) for r in reports if REASON_LABELS.get(r.reason))
    return reasons.most_common(1)[0][0] if reasons else None


def _summary(draft: GeneratedDraft, verdict: Verdict, reference: float | None, history: list[float]) -> dict[str, Any]:
    return {
        "category": {"value": draft.category.category, "given": draft.category.given, "method": draft.category.method,
                     "similarity": draft.category.similarity},
        "template": draft.template,
        "learned_phrases": list(draft.learned_phrases),
        "scores": dict(verdict.scores),
        "reference_price": reference,
        "price_history": history[:20],
        "own_words": len(draft.business_text.split()),
    }


def _entry_dict(entry: QueueEntry) -> dict[str, Any]:
    return {"queue_id": entry.queue_id, "target_type": entry.target_type, "target_id": entry.target_id,
            "business_id": entry.business_id, "reason": entry.reason, "source": entry.source,
            "opened_at": _iso(entry.opened_ts), "status": entry.status, "closed_at": _iso(entry.closed_ts)}


def get_desk(services: Services) -> ModerationDesk:
    """The process-wide desk, created on first use."""
    return services.extra("moderation_desk", ModerationDesk.from_services)


# ------------------------------------------------------------------------------------------------
# Admin routes
# ------------------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1/moderation", tags=["moderation"], responses=MODERATION_RESPONSES)

ActorId = Annotated[str, Field(pattern=USER_ID_PATTERN, description="letters, digits and _ . : - (1-64)")]


class QueueEntryOut(BaseModel):
    queue_id: str
    target_type: Literal["draft", "item", "user"]
    target_id: str
    business_id: str | None
    reason: str = Field(description="why it is in the queue")
    source: Literal["moderation", "reports"]
    opened_at: datetime
    status: Literal["open", "closed"]
    closed_at: datetime | None
    reports: dict[str, int] = Field(description="reports on the target by reason")
    subject: dict[str, Any] = Field(description="what the moderator decides on: text, prices, findings")


class QueueOut(BaseModel):
    entries: list[QueueEntryOut]
    count: int


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "reject", "dismiss", "suspend"] = Field(
        description="drafts and items: approve | reject; users: dismiss | suspend"
    )
    label: Literal[LABELS] | None = Field(  # type: ignore[valid-type]
        None, description="what was wrong (reject, suspend); default: the top finding or report reason"
    )
    moderator: ActorId
    note: str | None = Field(None, max_length=500)
    suspend_days: float | None = Field(None, gt=0, le=3650, description="suspend: for how long; default: until reinstated")


class DecisionOut(BaseModel):
    decision_id: str
    queue_id: str
    target_type: str
    target_id: str
    action: str
    label: str | None
    learned: bool = Field(description="whether the text classifier learned from this decision")
    effects: list[str]


class DecisionRecordOut(BaseModel):
    decision_id: str
    queue_id: str
    target_type: str
    target_id: str
    action: str
    label: str | None
    moderator: str
    note: str | None
    decided_at: datetime


class SuspensionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor_type: Literal["user", "business"]
    actor_id: ActorId
    reason: str = Field(min_length=1, max_length=500)
    days: float | None = Field(None, gt=0, le=3650, description="default: until reinstated")


class SuspensionOut(BaseModel):
    actor_type: str
    actor_id: str
    reason: str
    since: datetime
    until: datetime | None


def _suspension_out(s: Suspension) -> SuspensionOut:
    return SuspensionOut(actor_type=s.actor_type, actor_id=s.actor_id, reason=s.reason,
                         since=datetime.fromtimestamp(s.since_ts, UTC),
                         until=datetime.fromtimestamp(s.until_ts, UTC) if s.until_ts is not None else None)


@router.get("/queue", response_model=QueueOut, summary="Drafts, items and users waiting for a moderator")
def get_queue(
    services: ServicesDep,
    status: Annotated[Literal["open", "closed"], Query()] = "open",
    target_type: Annotated[Literal["draft", "item", "user"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> QueueOut:
    entries = get_desk(services).queue_entries(status, target_type, limit, offset)
    return QueueOut(entries=[QueueEntryOut(**e) for e in entries], count=len(entries))


@router.post("/queue/{queue_id}/decision", response_model=DecisionOut,
             summary="Decide a queue entry; the text classifier learns from it")
def post_decision(
    queue_id: Annotated[str, Path(pattern=r"^q-[0-9a-f]{16}$")], body: DecisionIn, services: ServicesDep
) -> DecisionOut:
    if body.suspend_days is not None and body.action != "suspend":
        raise ApiError(422, "suspend_days: only applies to action 'suspend'",
                       [{"field": "suspend_days", "message": "only with suspend", "type": "value_error"}])
    outcome = get_desk(services).decide(queue_id, body.action, body.label, body.moderator, body.note,
                                        body.suspend_days)
    return DecisionOut(decision_id=outcome.decision_id, queue_id=queue_id, target_type=outcome.entry.target_type,
                       target_id=outcome.entry.target_id, action=outcome.action, label=outcome.label,
                       learned=outcome.learned, effects=outcome.effects)


@router.get("/decisions", response_model=list[DecisionRecordOut], summary="Recent decisions, newest first")
def get_decisions(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    target_type: Annotated[Literal["draft", "item", "user"] | None, Query()] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
) -> list[DecisionRecordOut]:
    records = get_desk(services).store.decisions(limit, target_type, target_id)
    return [DecisionRecordOut(decision_id=d.decision_id, queue_id=d.queue_id, target_type=d.target_type,
                              target_id=d.target_id, action=d.action, label=d.label, moderator=d.moderator,
                              note=d.note, decided_at=datetime.fromtimestamp(d.ts, UTC)) for d in records]


@router.get("/suspensions", response_model=list[SuspensionOut], summary="Accounts suspended now")
def get_suspensions(services: ServicesDep) -> list[SuspensionOut]:
    desk = get_desk(services)
    return [_suspension_out(s) for s in desk.store.suspensions(desk.clock())]


@router.post("/suspensions", response_model=SuspensionOut, status_code=201, summary="Suspend a user or a business")
def post_suspension(body: SuspensionIn, services: ServicesDep) -> SuspensionOut:
    return _suspension_out(get_desk(services).suspend(body.actor_type, body.actor_id, body.reason, body.days))


@router.delete("/suspensions/{actor_type}/{actor_id}", response_model=SuspensionOut,
               summary="Reinstate a suspended account")
def delete_suspension(
    actor_type: Literal["user", "business"],
    actor_id: Annotated[str, Path(pattern=USER_ID_PATTERN)],
    services: ServicesDep,
) -> SuspensionOut:
    store = get_desk(services).store
    suspension = store.suspension(actor_type, actor_id)
    if suspension is None or not store.reinstate(actor_type, actor_id):
        raise ApiError(404, f"{actor_type} {actor_id!r} is not suspended")
    return _suspension_out(suspension)


__all__ = ["ModerationDesk", "REPORT_REASONS", "get_desk", "router"]
