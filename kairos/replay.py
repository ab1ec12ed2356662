"""Replaying dead letters after a mapping fix.

A dead letter that decodes with the current mapping is sent back through the flow inside an
envelope appended to the event store's ``_kairos_replay`` collection (the system of record is never
written to). The flow's decode step unwraps envelopes (:func:`unwrap`) and decodes the original
document under its original collection; the dead letter is marked ``replayed`` so it enters once.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kairos.decoding import decode
from kairos.schema import Event
from kairos.stores.deadletters import SqliteDeadLetters
from kairos.stores.event_store import EventStore, SourceRecord

REPLAY_COLLECTION = "_kairos_replay"


def unwrap(record: SourceRecord) -> SourceRecord:
    """The original record inside a replay envelope (other records pass through)."""
    if record.collection != REPLAY_COLLECTION:
        return record
    envelope = record.document
    try:
        appended = datetime.fromisoformat(envelope["appended_at"])
        # The position names the dead letter, not the envelope: a letter re-sent twice (a crash
        # between append and mark) gets the same event id both times.
        return SourceRecord(collection=str(envelope["collection"]), position=f"replay-{envelope['deadletter_id']}",
                            op=str(envelope.get("op", "insert")), document=envelope["document"],
                            appended_at=appended)
    except (KeyError, TypeError, ValueError):
        # A hand-written or damaged envelope: decode it as what it is, a document of an unmapped
        # collection, so it lands in the dead-letter log instead of vanishing.
        return record


@dataclass
class ReplayReport:
    replayed: int = 0
    still_failing: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"replayed": self.replayed, "still_failing": self.still_failing,
                "still_failing_reasons": dict(self.reasons.most_common(20))}


def replay(letters: SqliteDeadLetters, store: EventStore, mappings: dict[str, Any], h3_resolution: int,
           collection: str | None = None, dry_run: bool = False, batch: int = 500) -> ReplayReport:
    """Decode every open dead letter again; re-send those that now decode.

    Idempotent: letters whose envelope is already in the replay collection (a run that crashed
    between sending and marking) are only marked, not sent again.
    """
    report = ReplayReport()
    sent = already_sent(store)
    after = 0
    while True:
        page = letters.list(collection, limit=batch, status="open", after_id=after)
        if not page:
            return report
        after = page[-1]["id"]
        envelopes, done = [], []
        for letter in page:
            document = json.loads(letter["document"])
            record = SourceRecord(letter["collection"], str(letter["position"]), _op(letter), document,
                                  _received(letter))
            result = decode(record, mappings, h3_resolution) if isinstance(document, dict) else None
            if isinstance(result, Event):
                done.append(letter["id"])
                if letter["id"] in sent:
                    continue
                envelopes.append({"collection": letter["collection"], "op": record.op, "document": document,
                                  "appended_at": record.appended_at.isoformat(), "deadletter_id": letter["id"]})
            else:
                reason = result.reason if result is not None else "document is not a JSON object"
                report.still_failing += 1
                report.reasons[reason] += 1
                if not dry_run and reason != letter["reason"]:
                    letters.update_reason(letter["id"], reason)
        if not dry_run:
            if envelopes:
                store.append(REPLAY_COLLECTION, envelopes)
            # Marked after the append, and the append is checked on the next run (already_sent):
            # a crash in between neither loses a letter nor sends it twice.
            letters.mark_replayed(done)
        report.replayed += len(done)


def already_sent(store: EventStore) -> set[int]:
    """Dead-letter ids that have an envelope in the replay collection."""
    sent: set[int] = set()
    position = None
    while batch := store.read(REPLAY_COLLECTION, position, 5000):
        position = batch[-1].position
        sent.update(int(r.document["deadletter_id"]) for r in batch if "deadletter_id" in r.document)
    return sent


def _op(letter: dict[str, Any]) -> str:
    return str(letter.get("op") or "insert")


def _received(letter: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(letter["received_at"])
    except (TypeError, ValueError):
        return datetime.now(timezone.utc)
