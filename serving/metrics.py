"""Prometheus metrics of the API (``GET /metrics``).

Two kinds:

* **Per request** (cheap, updated inline by the request middleware): request count and latency
  histogram per *route template* (``/v1/users/{user_id}/suggestions``, never the raw path, so
  the number of series stays bounded), method and status.
* **Sampled** (each costs a store query): events appended (a counter derived from the event
  store's count, plus the rate between the last two samples), feature freshness lag per view (now
  minus the newest ``as_of`` in the online store), open dead letters by reason, and model versions
  published per model. They are sampled at most every ``KAIROS_METRICS_SAMPLE_S`` seconds, on
  scrape; scrapes in between read the last sample, so a busy Prometheus cannot load the stores.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (tests build many apps in one
process; the global registry would refuse duplicate metric names).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Latency buckets (seconds) around the serving budget (~25 ms p99 for suggestions).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Models the flow and the API publish (online/model_state.py names); others are found on disk.
KNOWN_MODELS = ("bandit", "next_intent", "market_model")
#: Most dead-letter reasons exported; the rest are summed under ``other`` (bounded series).
MAX_REASONS = 20


def reason_class(reason: str) -> str:
    """A dead-letter reason without its values, so that one kind of failure is one series:
    ``lat: 91.5 is out of range`` and ``lat: 97 is out of range`` → ``lat: <n> is out of range``."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "<v>", reason)
    text = re.sub(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", "<n>", text)
    return text.strip()[:80] or "undecodable document"


class Sampler:
    """Reads the costlier numbers from the stores, at most once per ``every_s``."""

    def __init__(self, services: Any, every_s: float) -> None:
        self.services = services
        self.every_s = every_s
        self._lock = threading.Lock()
        self._at = -1e18
        self.values: dict[str, Any] = {}
        self._last_events: tuple[float, int] | None = None

    def sample(self, force: bool = False) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if force or now - self._at >= self.every_s:
                self.values = self._read(now)
                self._at = now
            return self.values

    def _read(self, now: float) -> dict[str, Any]:
        values: dict[str, Any] = {}
        settings = self.services.settings
        for name, fn in (("events", lambda: self.services.event_store.count()),
                         ("freshness", lambda: feature_freshness(settings)),
                         ("deadletters", lambda: deadletters_by_reason(settings.deadletter_path)),
                         ("models", lambda: model_versions(settings))):
            try:
                values[name] = fn()
            except Exception:  # a store that does not answer loses its series, not the scrape
                log.warning("metrics: sampling %s failed", name, exc_info=True)
        events = values.get("events")
        if events is not None:
            if self._last_events is not None and now > self._last_events[0]:
                values["events_per_s"] = max(0.0, (events - self._last_events[1]) / (now - self._last_events[0]))
            self._last_events = (now, events)
        return values


def feature_freshness(settings: Any) -> dict[str, float]:
    """Per view, seconds between now and the newest ``as_of`` the online store holds."""
    from kairos.features import VIEWS

    newest = (_newest_redis(settings, list(VIEWS)) if settings.profile == "redis"
              else _newest_sqlite(settings.feast_dir / "online_store.db", settings.feast_project, list(VIEWS)))
    now = time.time()
    return {view: max(0.0, now - ts) for view, ts in newest.items()}


def _newest_sqlite(path: Path, project: str, views: list[str]) -> dict[str, float]:
    if not path.exists():
        return {}
    out: dict[str, float] = {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        for view in views:
            try:
                (value,) = conn.execute(f'SELECT MAX(event_ts) FROM "{project}_{view}"').fetchone()
            except sqlite3.OperationalError:  # the view has no table yet
                continue
            if value is None:
                continue
            # This Feast version stores epoch seconds; older ones stored naive UTC datetime text.
            try:
                out[view] = float(value)
            except ValueError:
                out[view] = datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()
    finally:
        conn.close()
    return out


def _newest_redis(settings: Any, views: list[str], max_keys: int = 5000) -> dict[str, float]:
    """Newest row time per view over at most ``max_keys`` entity keys (a bounded SCAN: Redis has no
    index on time, so on a large store this is an estimate from a sample)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from kairos.stores.redis_conn import redis_client

    client = redis_client(settings.redis_url)
    try:
        fields = [f"_ts:{v}".encode() for v in views]
        out: dict[str, float] = {}
        keys = []
        for key in client.scan_iter(match=f"*{settings.feast_project}", count=1000):
            keys.append(key)
            if len(keys) >= max_keys:
                break
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, fields)
        for row in pipe.execute() if keys else []:
            for view, raw in zip(views, row, strict=True):
                if raw:
                    ts = Timestamp.FromString(raw)
                    seconds = ts.seconds + ts.nanos / 1e9
                    out[view] = max(out.get(view, 0.0), seconds)
        return out
    finally:
        client.close()


def deadletters_by_reason(path: Path) -> dict[tuple[str, str], int]:
    """Open and replayed dead letters by (reason class, status)."""
    if not Path(path).exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute("SELECT reason, status, COUNT(*) FROM deadletters GROUP BY reason, status").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    counts: Counter[tuple[str, str]] = Counter()
    for reason, status, n in rows:
        counts[(reason_class(str(reason)), str(status))] += int(n)
    top = {r for r, _ in Counter({r: n for (r, _s), n in counts.items()}).most_common(MAX_REASONS)}
    out: Counter[tuple[str, str]] = Counter()
    for (reason, status), n in counts.items():
        out[(reason if reason in top else "other", status)] += n
    return dict(out)


def model_versions(settings: Any) -> dict[str, int]:
    """Latest published version per model (versions only grow, so it counts publications)."""
    from online.model_state import open_model_state

    names = set(KNOWN_MODELS)
    folder = Path(settings.home) / "models"
    if settings.profile != "redis" and folder.is_dir():
        names.update(p.name for p in folder.iterdir() if p.is_dir())
    store = open_model_state(settings)
    try:
        out = {}
        for name in sorted(names):
            try:
                version = store.latest_version(name)
            except ValueError:  # not a valid model name
                continue
            if version is not None:
                out[name] = int(version)
        return out
    finally:
        store.close()


class _SampledCollector(Collector):
    def __init__(self, sampler_of: Any) -> None:
        self.sampler_of = sampler_of

    def collect(self) -> Iterator[Any]:
        sampler = self.sampler_of()
        if sampler is None:
            return
        values = sampler.sample()
        if "events" in values:
            total = CounterMetricFamily("kairos_events_appended", "Documents in the event store (rate() gives events/s)")
            total.add_metric([], values["events"])
            yield total
        if "events_per_s" in values:
            rate = GaugeMetricFamily("kairos_events_appended_per_second",
                                     "Events appended per second between the last two samples")
            rate.add_metric([], values["events_per_s"])
            yield rate
        if "freshness" in values:
            lag = GaugeMetricFamily("kairos_feature_freshness_lag_seconds",
                                    "Now minus the newest as_of in the online store, per feature view", labels=["view"])
            for view, seconds in sorted(values["freshness"].items()):
                lag.add_metric([view], seconds)
            yield lag
        if "deadletters" in values:
            letters = GaugeMetricFamily("kairos_deadletters", "Dead letters by reason (values stripped) and status",
                                        labels=["reason", "status"])
            for (reason, status), n in sorted(values["deadletters"].items()):
                letters.add_metric([reason, status], n)
            yield letters
        if "models" in values:
            models = CounterMetricFamily("kairos_model_versions_published",
                                         "Model versions published (rate() gives the model update rate)",
                                         labels=["model"])
            for name, version in sorted(values["models"].items()):
                models.add_metric([name], version)
            yield models


class Metrics:
    """The registry of one app, its per-request metrics and its sampled collector."""

    def __init__(self, sampler_of: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = PromCounter("kairos_http_requests", "HTTP requests by route template, method and status",
                                    ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("kairos_http_request_duration_seconds", "Request latency by route template",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_SampledCollector(sampler_of))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def get_sampler(services: Any) -> Sampler:
    return services.extra("metrics_sampler", lambda s: Sampler(s, s.settings.metrics_sample_s))


__all__ = ["LATENCY_BUCKETS", "Metrics", "Sampler", "deadletters_by_reason", "feature_freshness", "get_sampler",
           "model_versions", "reason_class"]
