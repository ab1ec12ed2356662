"""Attribution: join impressions with the feedback that follows them into labelled examples.

Every item the API returns is logged as an ``impression`` (with the request id and the features the
ranker scored, :mod:`serving.impressions`); the app reports ``click``, ``save``, ``purchase`` and
``dismiss`` (``POST /v1/feedback``). :class:`AttributionState` joins them **in event time**: an
impression at ``t`` earns reward 1 when the same user clicks, saves or buys the same item within
``(t - clock_skew, t + window]``, and 0 otherwise (a dismiss is an explicit 0). The example is
emitted once the watermark, the newest event time seen (in the flow: never past the wall clock,
so one future-dated event cannot make every real impression "too late") minus the allowed
lateness, has passed ``t + window``, so feedback that arrives late or out of order still counts:

* feedback may arrive before its impression (different collections, different clients): it waits
  as an *orphan* until the impression comes;
* feedback later than the allowed lateness, for an impression already emitted as a negative, emits
  a *correction* (the same impression, reward 1, ``correction=True``), as long as it is within
  ``late_grace`` of the window's end; later than that it is counted and dropped;
* a click names its request when the app sends it; otherwise it goes to the latest impression of
  that item to that user before it (last touch);
* duplicate impressions (the server and the app both log one) and replayed feedback count once.

Why the state is keyed by a *shard* of users and not by ``(user, item)``: most impressions get no
feedback at all, so a ``(user, item)`` key would never see the later event that lets it close its
window, and negatives, the bulk of the labels, would never be emitted. A shard sees the traffic of
many users, so its watermark keeps moving; keying by user inside the shard keeps a user's
impressions and feedback together. The watermark only moves with impressions and feedback (which
the API appends to one collection in time order), not with pings or searches, because the flow
reads collections at different speeds while catching up and their event times are not comparable.

Like :mod:`flows.steps`, the state is a plain picklable object, so Bytewax snapshots it.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import pickle
import threading
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from kairos.schema import Event

log = logging.getLogger(__name__)

#: Feedback kinds that make an impression a success, strongest last (bookings are purchases).
POSITIVE_KINDS = ("click", "save", "purchase", "booking")
NEGATIVE_KINDS = ("dismiss",)
FEEDBACK_KINDS = POSITIVE_KINDS + NEGATIVE_KINDS
IMPRESSION = "impression"
#: Outcome of an impression, weakest first; the label keeps the strongest one seen.
OUTCOMES = ("none", "dismiss", "click", "save", "purchase")


def outcome_of(kind: str) -> str:
    return "purchase" if kind == "booking" else kind


def _rank(outcome: str) -> int:
    return OUTCOMES.index(outcome)


@dataclass(frozen=True)
class AttributionParams:
    """Settings of the join (small, so it pickles into every worker)."""

    #: Feedback within this long after an impression is attributed to it.
    window_s: float = 1800.0
    #: The watermark lags the newest event time by this: feedback this late still counts normally.
    allowed_lateness_s: float = 300.0
    #: After an example is emitted, positives arriving within this long still emit a correction.
    late_grace_s: float = 3600.0
    #: Feedback stamped by a phone may be this much earlier than the server's impression time.
    clock_skew_s: float = 60.0
    #: Number of shards (keys) users are spread over.
    shards: int = 16
    #: The watermark never runs more than this ahead of the wall clock (None: no cap, pure event
    #: time, as unit tests with made-up times want). The flow sets it (:meth:`from_settings`): one
    #: future-dated event (a phone with a wrong clock, or a simulated day that runs to midnight)
    #: would otherwise carry the watermark hours past now, and every real impression would then
    #: be dropped as too late, also after a restart, since the watermark is in the snapshot.
    max_ahead_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("window_s", "allowed_lateness_s", "late_grace_s", "clock_skew_s", "max_ahead_s"):
            value = getattr(self, name)
            if name == "max_ahead_s" and value is None:
                continue
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.window_s <= 0:
            raise ValueError("window_s must be positive")
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1, not {self.shards!r}")

    @classmethod
    def from_settings(cls, settings: Any) -> AttributionParams:
        """From ``KAIROS_ATTRIBUTION_*`` settings, where the configuration has them."""
        defaults = cls()
        return cls(
            window_s=float(getattr(settings, "attribution_window_s", defaults.window_s)),
            allowed_lateness_s=float(getattr(settings, "attribution_lateness_s", defaults.allowed_lateness_s)),
            late_grace_s=float(getattr(settings, "attribution_grace_s", defaults.late_grace_s)),
            shards=int(getattr(settings, "attribution_shards", defaults.shards)),
            # The watermark is a promise that nothing older will come; past the wall clock it is
            # a guess. Capped at now, a slightly fast clock only delays closing, never drops.
            max_ahead_s=0.0,
        )


@dataclass(frozen=True)
class LabelledExample:
    """One impression with its label: what the ranker saw and whether the user engaged."""

    impression_id: str
    request_id: str | None
    user_id: str
    item_id: str
    impression_ts: float
    position: int | None
    #: The ranker's feature vector at serving time (``online.bandit.context_features``).
    features: dict[str, float]
    score_parts: dict[str, float]
    #: 1: clicked, saved or bought within the window; 0: nothing, or dismissed.
    reward: int
    #: The strongest feedback seen: none, dismiss, click, save or purchase.
    outcome: str
    #: Seconds from the impression to the first positive feedback; None for negatives.
    delay_s: float | None
    #: A late positive for an impression already emitted as a negative.
    correction: bool = False
    ranker: str | None = None
    #: What showed it: ``suggestions`` or ``search`` (as the impression log says).
    source: str | None = None

    def to_row(self) -> dict[str, Any]:
        """Flat row for the offline log (dicts as JSON text)."""
        row = asdict(self)
        row["features"] = json.dumps(self.features, sort_keys=True)
        row["score_parts"] = json.dumps(self.score_parts, sort_keys=True)
        return row


@dataclass
class _Impression:
    ts: float
    event_id: str
    request_id: str | None
    position: int | None
    features: dict[str, float]
    score_parts: dict[str, float]
    ranker: str | None
    source: str | None = None
    outcome: str = "none"
    first_positive_ts: float | None = None
    emitted_reward: int | None = None  # set once the example is out
    corrected: bool = False
    feedback_ids: set[str] = field(default_factory=set)

    def matches(self, ts: float, params: AttributionParams) -> bool:
        return self.ts - params.clock_skew_s <= ts <= self.ts + params.window_s


@dataclass(frozen=True)
class _Feedback:
    ts: float
    event_id: str
    kind: str
    request_id: str | None


def is_attribution_event(event: Event) -> bool:
    """Impressions and feedback of a user on an item: what the attribution step consumes."""
    return (
        event.actor_type == "user"
        and event.item_id is not None
        and (event.kind == IMPRESSION or event.kind in FEEDBACK_KINDS)
    )


def attribution_key(event: Event, shards: int = 16) -> str:
    """The shard of the event's user: stable across processes (unlike ``hash``)."""
    return f"shard{zlib.crc32(event.actor_id.encode('utf-8')) % max(1, shards)}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    out = {}
    for key, number in value.items():
        if isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number):
            out[str(key)] = float(number)
    return out


def _position(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class AttributionState:
    """Keyed by a shard of users; joins their impressions and feedback per ``(user, item)``.

    ``update(event)`` folds one impression or feedback event in and returns the examples whose
    window the watermark has now passed; ``flush()`` closes everything (end of a bounded stream).
    """

    #: (user, item) -> impressions not yet emitted, and emitted ones kept for corrections.
    open: dict[tuple[str, str], list[_Impression]] = field(default_factory=dict)
    closed: dict[tuple[str, str], list[_Impression]] = field(default_factory=dict)
    #: (user, item) -> feedback whose impression has not arrived (yet).
    orphans: dict[tuple[str, str], list[_Feedback]] = field(default_factory=dict)
    max_ts: float = -math.inf
    stats: Counter = field(default_factory=Counter)
    #: Heap of (deadline, sequence, "close" | "forget" | "orphan", key, event id).
    due: list[tuple[float, int, str, tuple[str, str], str]] = field(default_factory=list)
    sequence: int = 0

    def watermark(self, params: AttributionParams) -> float:
        newest = self.max_ts
        if params.max_ahead_s is not None:
            # Capped when read, not when stored: a state recovered with a future max_ts (written
            # before this cap existed) resumes attributing at once instead of hours later.
            newest = min(newest, time.time() + params.max_ahead_s)
        return newest - params.allowed_lateness_s

    def update(self, event: Event, params: AttributionParams) -> list[LabelledExample]:
        if not is_attribution_event(event):
            return []
        ts = event.ts.timestamp()
        key = (event.actor_id, str(event.item_id))
        out: list[LabelledExample] = []
        if event.kind == IMPRESSION:
            self._impression(key, ts, event, params)
        else:
            out += self._feedback(key, _Feedback(ts, event.event_id, event.kind,
                                                 _text(event.attrs.get("request_id"))), params)
        self.max_ts = max(self.max_ts, ts)
        out += self.advance(params)
        return out

    # -- joining -----------------------------------------------------------------------------

    def _impression(self, key: tuple[str, str], ts: float, event: Event, params: AttributionParams) -> None:
        request_id = _text(event.attrs.get("request_id"))
        for impression in (*self.open.get(key, ()), *self.closed.get(key, ())):
            same = impression.event_id == event.event_id or (
                request_id is not None and impression.request_id == request_id)
            if same:
                self.stats["duplicate_impressions"] += 1
                if ts < impression.ts and impression.emitted_reward is None:
                    impression.ts = ts  # the earliest sighting is when the user first saw it
                    self._schedule(ts + params.window_s, "close", key, impression.event_id)
                return
        if ts + params.window_s + params.late_grace_s < self.watermark(params):
            self.stats["impressions_too_late"] += 1
            return
        impression = _Impression(
            ts=ts,
            event_id=event.event_id,
            request_id=request_id,
            position=_position(event.attrs.get("position")),
            features=_numbers(event.attrs.get("features")),
            score_parts=_numbers(event.attrs.get("score_parts")),
            ranker=_text(event.attrs.get("ranker")),
            source=_text(event.attrs.get("source")),
        )
        self.open.setdefault(key, []).append(impression)
        self._schedule(ts + params.window_s, "close", key, impression.event_id)
        self.stats["impressions"] += 1
        # Feedback that came first: give each orphan a second chance now that there may be a match.
        waiting = self.orphans.pop(key, [])
        for feedback in sorted(waiting, key=lambda f: f.ts):
            if self._attach(key, feedback, params) is None:
                self.orphans.setdefault(key, []).append(feedback)

    def _feedback(self, key: tuple[str, str], feedback: _Feedback, params: AttributionParams) -> list[LabelledExample]:
        self.stats[f"feedback_{outcome_of(feedback.kind)}"] += 1
        result = self._attach(key, feedback, params)
        if result is None:
            self.orphans.setdefault(key, []).append(feedback)
            deadline = feedback.ts + params.clock_skew_s + params.window_s + params.late_grace_s
            self._schedule(deadline, "orphan", key, feedback.event_id)
            self.stats["orphans"] += 1
            return []
        return result

    def _attach(self, key: tuple[str, str], feedback: _Feedback, params: AttributionParams) -> list[LabelledExample] | None:
        """Attach feedback to its impression; None when there is none (yet).

        Feedback naming a request goes to that request's impression only, unless no impression of
        the item carries a request id at all (then, like feedback without one, to the last touch):
        the named impression may still be on its way, and crediting another request's impression
        of the same item would teach the ranker about the wrong context.
        """
        candidates = [i for i in (*self.open.get(key, ()), *self.closed.get(key, ()))
                      if i.matches(feedback.ts, params)]
        if feedback.request_id is not None and any(i.request_id is not None for i in candidates):
            candidates = [i for i in candidates if i.request_id == feedback.request_id]
        if not candidates:
            return None
        impression = max(candidates, key=lambda i: (i.ts, i.event_id))  # last touch
        return self._apply(key, impression, feedback)

    def _apply(self, key: tuple[str, str], impression: _Impression, feedback: _Feedback) -> list[LabelledExample]:
        if feedback.event_id in impression.feedback_ids:
            self.stats["duplicate_feedback"] += 1
            return []
        impression.feedback_ids.add(feedback.event_id)
        outcome = outcome_of(feedback.kind)
        positive = feedback.kind in POSITIVE_KINDS
        if impression.emitted_reward is None:
            if _rank(outcome) > _rank(impression.outcome):
                impression.outcome = outcome
            if positive and (impression.first_positive_ts is None or feedback.ts < impression.first_positive_ts):
                impression.first_positive_ts = feedback.ts
            return []
        # Already emitted: only a late positive on a negative changes the label.
        if positive and impression.emitted_reward == 0 and not impression.corrected:
            impression.corrected = True
            impression.outcome = outcome
            impression.first_positive_ts = feedback.ts
            self.stats["corrections"] += 1
            return [self._example(key, impression, reward=1, correction=True)]
        self.stats["late_feedback_ignored"] += 1
        return []

    # -- closing -----------------------------------------------------------------------------

    def advance(self, params: AttributionParams, watermark: float | None = None) -> list[LabelledExample]:
        """Emit every impression whose window ends at or before the watermark; forget old state.

        Deadlines sit in a heap, so an event costs O(log n) however many impressions are open.
        """
        mark = self.watermark(params) if watermark is None else watermark
        out: list[LabelledExample] = []
        while self.due and self.due[0][0] <= mark:
            deadline, _, what, key, ident = heapq.heappop(self.due)
            if what == "close":
                impression = _take(self.open, key, ident)
                if impression is not None:
                    out.append(self._close(key, impression, params))
            elif what == "forget":
                _take(self.closed, key, ident)
            elif _take(self.orphans, key, ident) is not None:
                # Any impression it could still match would now be dropped as too late.
                self.stats["unattributed_feedback"] += 1
        out.sort(key=lambda e: (e.impression_ts, e.impression_id))
        return out

    def _schedule(self, deadline: float, what: str, key: tuple[str, str], ident: str) -> None:
        self.sequence += 1
        heapq.heappush(self.due, (deadline, self.sequence, what, key, ident))

    def flush(self, params: AttributionParams) -> list[LabelledExample]:
        """Close every open impression now (the stream is over)."""
        return self.advance(params, watermark=math.inf)

    def _close(self, key: tuple[str, str], impression: _Impression, params: AttributionParams) -> LabelledExample:
        reward = 1 if impression.first_positive_ts is not None else 0
        impression.emitted_reward = reward
        self.closed.setdefault(key, []).append(impression)
        self._schedule(impression.ts + params.window_s + params.late_grace_s, "forget", key, impression.event_id)
        self.stats["positives" if reward else "negatives"] += 1
        return self._example(key, impression, reward=reward, correction=False)

    def _example(self, key: tuple[str, str], impression: _Impression, reward: int, correction: bool) -> LabelledExample:
        delay = None
        if reward and impression.first_positive_ts is not None:
            delay = max(0.0, impression.first_positive_ts - impression.ts)
        return LabelledExample(
            impression_id=impression.event_id,
            request_id=impression.request_id,
            user_id=key[0],
            item_id=key[1],
            impression_ts=impression.ts,
            position=impression.position,
            features=dict(impression.features),
            score_parts=dict(impression.score_parts),
            reward=reward,
            outcome=impression.outcome,
            delay_s=delay,
            correction=correction,
            ranker=impression.ranker,
            source=impression.source,
        )

    @property
    def pending(self) -> int:
        """Impressions waiting for their window to pass."""
        return sum(len(v) for v in self.open.values())


def _take(table: dict[tuple[str, str], list[Any]], key: tuple[str, str], ident: str) -> Any:
    """Remove and return the entry with event id ``ident`` under ``key`` (None when gone)."""
    entries = table.get(key)
    if not entries:
        return None
    for i, entry in enumerate(entries):
        if entry.event_id == ident:
            del entries[i]
            if not entries:
                del table[key]
            return entry
    return None


def attribution_step(
    params: AttributionParams, state: AttributionState | None, event: Event
) -> tuple[AttributionState, list[LabelledExample]]:
    """``op.stateful_map`` mapper: ``(state, event) -> (state, examples)``."""
    state = state or AttributionState()
    return state, state.update(event, params)


# ------------------------------------------------------------------------------ learning sink


class LearnerPartition(StatefulSinkPartition[LabelledExample, bytes]):
    """Feeds labelled examples to the bandit and publishes it every ``publish_interval_s``.

    Publishing runs on its own thread, not on the next batch: when feedback stops, the last
    examples still reach the API within the interval (bounded staleness in quiet hours too). The
    lock makes a publish see whole examples only; pickling ~100 features takes milliseconds. The
    snapshot is the pickled model, so recovery resumes learning exactly where it stopped.

    Only impressions from ``sources`` teach it: a search result is clicked because it matches the
    query, which the suggestions model does not see, and would teach it the wrong reasons.
    """

    def __init__(self, store: Any, name: str, model: Any, publish_interval_s: float = 1.0,
                 sources: tuple[str, ...] = ("suggestions",)) -> None:
        from online.model_state import ModelPublisher

        self.sources = sources
        self.model = model
        self.publisher = ModelPublisher(store, name, interval_s=publish_interval_s)
        self.lock = threading.Lock()
        self.learned = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_loop, name=f"publish-{name}", daemon=True)
        self._thread.start()

    def write_batch(self, items: list[LabelledExample]) -> None:
        with self.lock:
            for example in items:
                if example.features and (example.source is None or example.source in self.sources):
                    self.model.learn_one(example.features, example.reward, position=example.position)
                    self.learned += 1
                    self.publisher.changed()

    def _publish_loop(self) -> None:
        while not self._stop.wait(self.publisher.interval_s or 0.05):
            self.publish()

    def publish(self) -> int | None:
        try:
            with self.lock:
                return self.publisher.flush(self.model)
        except Exception:  # noqa: BLE001 - a store outage must not stop learning; retried next tick
            log.warning("publishing model %r failed; will retry", self.publisher.name, exc_info=True)
            return None

    def snapshot(self) -> bytes:
        with self.lock:
            return pickle.dumps(self.model, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.publish()
        from flows import timing  # here: attribution is imported by the API, which never times flows

        timing.mark("end")


class LearnerSink(FixedPartitionedSink[LabelledExample, bytes]):
    """A Bytewax sink that learns the bandit from labelled examples and publishes it.

    One partition, so one model learns from every example (labelled impressions are few next to
    the event rate; the learner is not the bottleneck). It resumes from its recovery snapshot,
    else from the newest published version, else starts fresh. Route examples to it keyed by
    anything: ``op.key_on("to_learner", examples, lambda e: "bandit")``.
    """

    def __init__(self, settings: Any, name: str = "bandit", publish_interval_s: float = 1.0) -> None:
        self.settings, self.name, self.publish_interval_s = settings, name, publish_interval_s

    def list_parts(self) -> list[str]:
        return [self.name]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: bytes | None) -> LearnerPartition:
        from online.bandit import BanditRanker
        from online.model_state import open_model_state

        store = open_model_state(self.settings)
        if resume_state is not None:
            model = pickle.loads(resume_state)
        else:
            latest = store.load(self.name)
            model = latest[1] if latest is not None else BanditRanker()
        return LearnerPartition(store, self.name, model, self.publish_interval_s)


__all__ = [
    "POSITIVE_KINDS",
    "FEEDBACK_KINDS",
    "AttributionParams",
    "AttributionState",
    "LabelledExample",
    "attribution_key",
    "attribution_step",
    "is_attribution_event",
    "LearnerSink",
    "LearnerPartition",
]
