"""All configuration in one place: environment variables with the ``KAIROS_`` prefix.

Every knob Kairos has is a field of :class:`Settings`; the README lists them. Components receive a
``Settings`` instance instead of reading the environment themselves, so tests can build one with
``Settings(home=tmp_path)`` and never touch global state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

Profile = Literal["local", "redis"]


def _env_default(name: str, default: Any) -> Any:
    raw = os.environ.get(f"KAIROS_{name.upper()}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, Path):
        return Path(raw).expanduser()
    return raw


@dataclass(frozen=True)
class Settings:
    """Kairos settings. ``Settings.from_env()`` reads ``KAIROS_<FIELD>`` for each field."""

    #: Where the embedded profile keeps everything (event log, online store, offline log, catalog).
    home: Path = Path("./var")
    #: ``local``: Feast SQLite online store; ``redis``: Feast Redis online store.
    profile: str = "local"
    #: Redis connection for the ``redis`` profile (``host:port`` plus optional ``,db=N``).
    redis_url: str = "127.0.0.1:6379"
    #: ``redis`` or ``redis_cluster`` (Feast's Redis Cluster client for online features).
    redis_type: str = "redis"
    #: Socket (and connect) timeout of the Feast Redis client, unless KAIROS_REDIS_URL sets its own
    #: ``socket_timeout``: a Redis that hangs fails a read after this long instead of never.
    redis_timeout_s: float = 2.0
    #: Event source: ``sqlite`` (the embedded log under KAIROS_HOME) or ``mongo`` (change streams).
    event_store: str = "sqlite"
    #: MongoDB connection string (a replica set: change streams need one) and database.
    mongo_url: str = ""
    mongo_db: str = "kairos"
    #: Feast project name; also namespaces Redis keys, so tests use one of their own.
    feast_project: str = "kairos"
    #: H3 resolution of the ``cell`` of an event (8 is about 0.7 km² per cell).
    h3_resolution: int = 8
    #: Coarser H3 resolution used to find a user's home area.
    home_resolution: int = 6
    #: A user whose last location is farther than this from home is travelling.
    travel_km: float = 100.0
    #: Collection → decoder mapping file; empty means the packaged default.
    collections_file: str = ""
    #: API bind address for ``kairos serve``.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    #: Worker processes of ``kairos serve`` (uvicorn ``--workers``); each holds its own caches.
    api_workers: int = 1
    #: With several workers, each listens on its own ``SO_REUSEPORT`` socket so the kernel spreads
    #: connections over them (``serving/supervisor.py``); off: uvicorn's one shared socket.
    api_reuse_port: bool = True
    #: Every API route asks for an API key of the right scope (``Authorization: Bearer <key>``).
    #: Off only for tests and embedded experiments; see ``kairos keys``.
    auth_required: bool = True
    #: Verified API keys are cached this long in each API process: a revocation takes effect
    #: within this many seconds everywhere, and the key store is read at most once per key per period.
    api_key_cache_s: float = 2.0
    #: Per-key usage counters are buffered in memory and written to the key store this often.
    api_usage_flush_s: float = 5.0
    #: Rate limit (requests per minute) of keys created without ``--rate-limit``; 0: unlimited.
    api_key_rate_limit_per_min: int = 0
    #: ``/metrics``: how often the costlier gauges (event count, feature freshness, dead letters,
    #: model versions) are sampled; a scrape reads the last sample.
    metrics_sample_s: float = 15.0
    #: Structured JSON log lines (one per request, with its request id) when ``kairos serve`` runs.
    log_json: bool = True
    #: Default search radius of suggestions, and its hard upper bound.
    suggest_radius_km: float = 3.0
    max_radius_km: float = 50.0
    #: Suggestions keep the candidates around a point (catalog items with their ``item_stats`` and
    #: area prices) per H3 cell for this long, refreshed in the background; 0 turns the cache off.
    #: Rebuilds of neighbouring cells share the rows read in the last half of this time
    #: (``serving/row_memo.py``), so a served row is at most 1.5 times this old between refreshes.
    suggest_cache_ttl_s: float = 5.0
    #: Serve ``GET /v1/users/{id}/suggestions`` on the event loop instead of the thread pool: its
    #: store reads take well under a millisecond, and the hand-off to a worker thread and back cost
    #: about a third of a request's CPU. While Redis hangs (rather than refuses), a read then holds
    #: the worker's loop for up to KAIROS_REDIS_TIMEOUT_S before the breaker serves last known
    #: values; ``false`` keeps the thread pool.
    api_inline_suggestions: bool = True
    #: H3 resolution of the cells that candidate cache is keyed by (7: about 5 km²).
    suggest_cache_resolution: int = 7
    #: Impressions wait in a queue of this many responses for the background writer; when it is
    #: full the request writes its own (slower, never lost).
    impression_queue_size: int = 10000
    #: How often a tailing flow polls the event store when it is caught up.
    poll_interval_s: float = 0.2
    #: Records a source partition reads per batch.
    source_batch_size: int = 2000
    #: The SQLite event log reads each collection as this many source partitions (rows by
    #: sequence number modulo N), so one busy collection (location pings) is read and decoded by
    #: several workers; set it to the flow's worker count. A MongoDB collection is one change
    #: stream whatever this says. Kept for the life of a recovery directory (it names the
    #: partitions Bytewax resumes).
    source_shards: int = 2
    #: Bytewax recovery: snapshot state and positions every epoch, resume after a crash.
    recovery: bool = True
    #: Recovery partitions created on first run (more lets more workers snapshot in parallel).
    recovery_partitions: int = 4
    #: Length of a Bytewax epoch: how often state is snapshotted and the offline log is flushed.
    epoch_interval_s: float = 2.0
    #: A flow process's cyclic garbage collector: first-generation threshold (Python's default is
    #: 700), and the objects alive once the flow is built (Feast, torch, pandas: millions of them)
    #: frozen out of every collection. With the default, collections triggered by the flow's
    #: short-lived tuples and dicts cost about a fifth of its CPU, and more with two processes.
    #: 0 leaves the collector as Python sets it.
    flow_gc_threshold: int = 50000
    #: Rows buffered by the offline-log sink before a Parquet part file is written.
    offline_flush_rows: int = 20000
    #: ... or after this many seconds, whichever comes first.
    offline_flush_s: float = 5.0

    #: Moderation: classifier probability of harm that sends a draft to review / rejects it.
    moderation_review_threshold: float = 0.65
    moderation_reject_threshold: float = 0.97
    #: Distinct reporters in 7 days that move an item to review (severe reasons: the lower one),
    #: and that queue a user.
    report_threshold: int = 3
    severe_report_threshold: int = 2
    user_report_threshold: int = 3
    #: Strikes in 30 days (removals, rejected drafts) that suspend a business.
    strikes_to_suspend: int = 3
    #: Declared size limits of media attached to drafts.
    media_max_image_mb: float = 10.0
    media_max_video_mb: float = 200.0

    #: ``kairos flow run`` also runs the learning flow (bandit, next intent, taste embeddings,
    #: market model) beside the feature flow, as a process of its own.
    learners: bool = True
    #: Search: how often the item index picks up catalog changes, and its H3 bucket resolution.
    search_refresh_s: float = 1.0
    search_bucket_resolution: int = 7
    #: User embeddings forget half their weight over this many seconds.
    user_embedding_half_life_s: float = 604800.0
    #: Next intent: a category is suggested ("you may want a spa now") above this probability.
    intent_min_probability: float = 0.3

    #: Ranker of suggestions: ``bandit`` (Thompson sampling, once trained) or ``transparent``.
    ranker: str = "bandit"
    #: Feedback joins an impression within this window (event time); later data up to the
    #: lateness is still folded in, and a click within the grace corrects a closed negative.
    attribution_window_s: float = 1800.0
    attribution_lateness_s: float = 300.0
    attribution_grace_s: float = 3600.0
    attribution_shards: int = 16
    #: The flow publishes learned models this often; the API polls for new versions this often.
    model_publish_interval_s: float = 1.0
    model_poll_interval_s: float = 0.5
    #: The shared text encoder (MiniLM, or its promoted fine-tuned version in the model registry)
    #: looks at the registry's pointer this often; a new version loads in the background.
    text_model_check_s: float = 5.0
    #: The API looks at the promoted next-category GRU (registry ``next_category``) this often;
    #: a new version loads in the background. It re-reads users' engaged categories from the
    #: offline log every ``sequence_history_refresh_s``.
    sequence_model_check_s: float = 5.0
    sequence_history_refresh_s: float = 2.0
    #: The GRU joins the online next-intent model for a user with at least this many engaged
    #: categories, with this share of a linear pool (0: never; 1: the GRU alone).
    sequence_min_history: int = 3
    sequence_intent_weight: float = 0.5
    #: The bandit serves once it has learned from this many impressions.
    bandit_min_examples: int = 100

    #: Business side: H3 resolution of a pricing "area" (-1: one coarser than KAIROS_H3_RESOLUTION),
    #: how late an hour's counts may still change before they teach the forecaster, how often the
    #: API rebuilds the market model when the flow has saved none.
    market_area_resolution: int = -1
    market_lateness_s: float = 300.0
    market_rebuild_interval_s: float = 60.0
    #: Price recommender guardrails: largest change per step, cost floor as a share of the list
    #: price, largest markup above list, smallest revenue gain worth a change, prior elasticity.
    pricing_max_step: float = 0.15
    pricing_floor_ratio: float = 0.7
    pricing_max_markup: float = 0.25
    pricing_min_gain: float = 0.01
    pricing_prior_elasticity: float = -1.5

    def __post_init__(self) -> None:
        # An absolute home: stores that resolve paths against their own folders (Feast resolves
        # the online store path against its repo path) must not nest a relative one twice.
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        values = {f.name: _env_default(f.name, f.default) for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def validate(self) -> None:
        if self.profile not in ("local", "redis"):
            raise ValueError(f"KAIROS_PROFILE must be 'local' or 'redis', not {self.profile!r}")
        if self.event_store not in ("sqlite", "mongo"):
            raise ValueError(f"KAIROS_EVENT_STORE must be 'sqlite' or 'mongo', not {self.event_store!r}")
        if self.event_store == "mongo" and not self.mongo_url:
            raise ValueError("KAIROS_EVENT_STORE=mongo needs KAIROS_MONGO_URL (a replica set's connection string)")
        if self.ranker not in ("bandit", "transparent"):
            raise ValueError(f"KAIROS_RANKER must be 'bandit' or 'transparent', not {self.ranker!r}")
        if not 0 < self.model_poll_interval_s <= 1.0:
            raise ValueError("KAIROS_MODEL_POLL_INTERVAL_S must be in (0, 1]: the API promises ≤ 5 s staleness")
        if self.redis_type not in ("redis", "redis_cluster"):
            raise ValueError(f"KAIROS_REDIS_TYPE must be 'redis' or 'redis_cluster', not {self.redis_type!r}")
        if not self.redis_timeout_s > 0:
            raise ValueError("KAIROS_REDIS_TIMEOUT_S must be > 0 seconds")
        if self.source_shards < 1:
            raise ValueError("KAIROS_SOURCE_SHARDS must be >= 1 (1: one source partition per collection)")
        if self.flow_gc_threshold < 0:
            raise ValueError("KAIROS_FLOW_GC_THRESHOLD must be >= 0 (0: Python's default collector)")
        if not 0 <= self.h3_resolution <= 15 or not 0 <= self.home_resolution <= 15:
            raise ValueError("KAIROS_H3_RESOLUTION and KAIROS_HOME_RESOLUTION must be in 0..15")

    # Paths of the embedded profile, derived so that there is one source of truth: ``home``.
    @property
    def event_log_path(self) -> Path:
        return self.home / "events.sqlite"

    @property
    def deadletter_path(self) -> Path:
        return self.home / "deadletters.sqlite"

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.sqlite"

    @property
    def moderation_path(self) -> Path:
        return self.home / "moderation.sqlite"

    @property
    def offline_dir(self) -> Path:
        return self.home / "offline"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def sim_dir(self) -> Path:
        return self.home / "sim"

    @property
    def recovery_dir(self) -> Path:
        return self.home / "recovery"


def settings_fields() -> list[tuple[str, Any, str]]:
    """(env var, default, type) for the README's configuration table."""
    return [(f"KAIROS_{f.name.upper()}", f.default, str(f.type)) for f in fields(Settings)]


__all__ = ["Settings", "Profile", "settings_fields"]
