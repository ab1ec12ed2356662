"""The background impression writer: batches, never loses a queued impression on clean shutdown,
writes on the request when its queue is full, survives a failing store."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from kairos.config import Settings
from serving.impressions import (
    FEEDBACK_COLLECTION,
    ImpressionJob,
    ImpressionWriter,
    enqueue_impressions,
    impression_documents,
)

NOW = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)


class MemoryStore:
    """An event store that remembers appends; optionally slow or failing."""

    def __init__(self, delay_s: float = 0.0, failures: int = 0) -> None:
        self.delay_s, self.failures = delay_s, failures
        self.batches: list[list[dict[str, Any]]] = []
        self.lock = threading.Lock()

    def append(self, collection: str, documents: list[dict[str, Any]]) -> list[str]:
        assert collection == FEEDBACK_COLLECTION
        time.sleep(self.delay_s)
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("store down")
            self.batches.append(list(documents))
            start = sum(len(b) for b in self.batches) - len(documents)
        return [str(start + i) for i in range(len(documents))]

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [d for b in self.batches for d in b]


def response(n: int, items: int = 3) -> dict[str, Any]:
    return {"request_id": f"r{n}", "user_id": f"u{n % 7}", "at": NOW,
            "location": {"lat": 40.0, "lon": -73.9},
            "items": [{"item_id": f"i{k}", "score": 1.0 - k / 10, "category": "spa", "distance_km": 0.5,
                       "score_parts": {"interest": 0.5, "distance": 0.7}} for k in range(items)]}


def job(n: int) -> ImpressionJob:
    return ImpressionJob(response(n), {"discount_sensitivity": 0.4}, None, NOW, "TransparentRanker",
                         "suggestions", None)


def test_queued_impressions_are_written_in_batches_exactly_as_built() -> None:
    store = MemoryStore(delay_s=0.02)  # slow enough that jobs pile up behind the first batch
    writer = ImpressionWriter(store)
    jobs = [job(n) for n in range(50)]
    assert all(writer.submit(j) for j in jobs)
    assert writer.flush(10)
    expected = [d for j in jobs for d in j.documents()]
    assert store.documents == expected  # every one, in order, unchanged
    assert len(store.batches) < len(jobs)  # batched: fewer appends than requests
    assert writer.written == len(expected) and writer.dropped == 0
    writer.close()


def test_the_writer_lingers_so_a_burst_of_responses_is_one_append() -> None:
    store = MemoryStore()  # instant: without the linger the writer would wake for the first job alone
    writer = ImpressionWriter(store, linger_s=0.5)
    jobs = [job(n) for n in range(10)]
    assert writer.submit(jobs[0])
    deadline = time.monotonic() + 5
    while writer._queue.qsize() and time.monotonic() < deadline:  # the writer has taken the first
        time.sleep(0.001)
    assert all(writer.submit(j) for j in jobs[1:])
    assert writer.flush(10)
    assert len(store.batches) == 1 and store.documents == [d for j in jobs for d in j.documents()]
    writer.close()


def test_close_drains_everything_queued() -> None:
    store = MemoryStore(delay_s=0.05)
    writer = ImpressionWriter(store, maxsize=1000, batch_docs=3)  # one response per append: slow drain
    for n in range(40):
        assert writer.submit(job(n))
    assert writer.pending() > 0  # still queued when the app shuts down
    writer.close()
    assert len(store.documents) == 40 * 3
    assert {d["request_id"] for d in store.documents} == {f"r{n}" for n in range(40)}
    assert not writer.submit(job(99))  # closed: the caller writes itself


def test_a_full_queue_writes_on_the_request_and_loses_nothing(tmp_path) -> None:
    store = MemoryStore(delay_s=0.2)
    settings = Settings(home=tmp_path, impression_queue_size=1)
    services = SimpleNamespace(settings=settings, event_store=store, ranker=None, extras={})
    services.extra = lambda name, factory: services.extras.setdefault(name, factory(services))  # noqa: B023
    results = [enqueue_impressions(services, response(n)) for n in range(4)]
    assert results[0] is True and False in results  # the queue of 1 overflowed: written synchronously
    services.extras["impression_writer"].close()
    assert sorted({d["request_id"] for d in store.documents}) == [f"r{n}" for n in range(4)]
    assert len(store.documents) == 4 * 3


def test_a_failing_store_is_retried_then_the_writer_goes_on() -> None:
    store = MemoryStore(failures=2)
    writer = ImpressionWriter(store, retries=3, retry_pause_s=0.01)
    writer.submit(job(1))
    assert writer.flush(5)
    assert [d["request_id"] for d in store.documents] == ["r1"] * 3  # written after two failures
    store.failures = 100
    writer.submit(job(2))
    assert writer.flush(5)
    assert writer.dropped == 3  # given up on after the retries, logged
    store.failures = 0
    writer.submit(job(3))
    writer.close()
    assert store.documents[-1]["request_id"] == "r3"


def test_draining_after_the_store_closed_reopens_one() -> None:
    gate = threading.Event()

    class ClosedStore(MemoryStore):
        def append(self, collection: str, documents: list[dict[str, Any]]) -> list[str]:
            gate.wait(5)  # the API is closing its stores while this batch is in flight
            raise RuntimeError("store closed")

    fresh = MemoryStore()
    writer = ImpressionWriter(ClosedStore(), retries=0, reopen=lambda: fresh)
    for n in range(5):
        writer.submit(job(n))
    closing = threading.Thread(target=writer.close)
    closing.start()
    while not writer._closed:
        time.sleep(0.001)
    gate.set()
    closing.join(5)
    # The queue still drains, into a store of the writer's own.
    assert sorted({d["request_id"] for d in fresh.documents}) == [f"r{n}" for n in range(5)]
    assert len(fresh.documents) == 15 and writer.dropped == 0


def test_malformed_response_does_not_stop_the_writer() -> None:
    store = MemoryStore()
    writer = ImpressionWriter(store)
    writer.submit(ImpressionJob({"request_id": "", "items": []}, None, None, NOW, None, "suggestions", None))
    writer.submit(job(4))
    writer.close()
    assert [d["request_id"] for d in store.documents] == ["r4"] * 3
    assert store.documents == impression_documents(response(4), {"discount_sensitivity": 0.4}, ts=NOW,
                                                   ranker="TransparentRanker")
