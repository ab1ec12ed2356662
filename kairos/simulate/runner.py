"""Run the city simulation: build the world, let it live, append its documents to an event store
in event-time order, and write the hidden ground truth beside (never into) the store."""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Any

import numpy as np

from kairos.schema import CATEGORIES
from kairos.simulate.behaviour import UserSimulator
from kairos.simulate.docs import Emitted, ObjectIds, iso_z
from kairos.simulate.items import Item, build_items, item_documents, render_business
from kairos.simulate.model import BASE_PRICES, CITIES, demand_curves, model_description
from kairos.simulate.world import DAY_S, Business, User, build_businesses, build_users
from kairos.stores.event_store import EventStore

GROUND_TRUTH_FILE = "ground_truth.json"
#: Fields that carry a document's time in the simulated shapes (removed to make it malformed).
TS_KEYS = ("ts", "timestamp", "created_at", "created", "epoch", "recorded_at", "updated_at", "modified")
LOCATION_KEYS = ("location", "coords", "loc", "position", "geo")
PRICE_KEYS = ("price", "amount", "cost")
ITEM_COLLECTIONS = ("offers", "events", "services")

_FIRST_NAMES = {
    "new-york": ("Ava", "Liam", "Maya", "Noah", "Zoe", "Ethan", "Mia", "Lucas", "Chloe", "Owen"),
    "mumbai": ("Aarav", "Diya", "Kabir", "Ananya", "Rohan", "Isha", "Vihaan", "Saanvi", "Arjun", "Meera"),
}


@dataclass
class SimConfig:
    """Size and randomness of a simulated run. Same ``seed`` and ``start``: same documents."""

    seed: int = 7
    days: int = 3
    #: First simulated instant (UTC). None: midnight UTC ``days - 1`` days ago, so the period
    #: ends at the end of today and "now" falls inside its last day.
    start: datetime | None = None
    n_users: int = 400
    n_businesses: int = 120
    #: Share of Mumbai users who fly to New York during the period (at least one does).
    traveller_share: float = 0.08
    mumbai_user_share: float = 0.2
    mumbai_business_share: float = 0.15
    #: Share of documents written malformed, to exercise the dead-letter path.
    malformed_share: float = 0.005
    #: Share of behaviour documents that reach the store up to two minutes late.
    late_share: float = 0.02
    #: Documents are appended in batches covering this much event time.
    batch_minutes: float = 10.0

    def resolved_start(self) -> datetime:
        if self.start is None:
            today = datetime.now(timezone.utc).date()
            return datetime.combine(today - timedelta(days=self.days - 1), dtime(0), tzinfo=timezone.utc)
        start = self.start
        return start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start.astimezone(timezone.utc)

    def validate(self) -> None:
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.n_users < 1 or self.n_businesses < 1:
            raise ValueError("n_users and n_businesses must be at least 1")
        for name in ("traveller_share", "mumbai_user_share", "mumbai_business_share", "malformed_share",
                     "late_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.batch_minutes <= 0:
            raise ValueError(f"batch_minutes must be positive, got {self.batch_minutes}")


@dataclass
class SimSummary:
    """What a run wrote."""

    documents: dict[str, int]  # per collection
    start: datetime
    end: datetime
    cities: dict[str, tuple[float, float]]
    ground_truth_path: Path
    malformed: int = 0
    users: int = 0
    businesses: int = 0
    items: int = 0
    elapsed_s: float = 0.0
    malformed_ids: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.documents.values())


def simulate(store: EventStore, config: SimConfig, out_dir: Path, progress: bool = False) -> SimSummary:
    """Simulate ``config.days`` of the two-city marketplace into ``store``.

    Documents go to the collections ``users``, ``businesses``, ``offers``, ``events``,
    ``services``, ``pings``, ``searches``, ``voice``, ``interactions`` and ``orders``; the hidden
    truth (tastes, trips, demand curves, prices, malformed ids) goes to
    ``out_dir/ground_truth.json``.
    """
    config.validate()
    began = time.perf_counter()
    start_dt = config.resolved_start()
    start = start_dt.timestamp()
    end = start + config.days * DAY_S
    rng = np.random.default_rng(config.seed)
    ids = ObjectIds(config.seed)

    businesses = build_businesses(rng, config.n_businesses, config.mumbai_business_share, start)
    users = build_users(rng, config.n_users, config.mumbai_user_share, config.traveller_share, start, end)
    items = build_items(rng, businesses, start, end)
    profiles = [Emitted(b.created, "businesses", "insert", render_business(b)) for b in businesses]
    profiles += [Emitted(u.signup, "users", "insert", _render_user(rng, u)) for u in users]
    item_docs = item_documents(items, end)
    behaviour = UserSimulator(rng, users, businesses, items, start, end, ids).run()
    malformed = _inject_malformed(rng, item_docs, behaviour, config.malformed_share)

    # Event-time order; a few behaviour documents arrive late, as phones on bad networks do.
    stream = item_docs + behaviour
    keys = np.array([e.ts for e in stream])
    late = np.zeros(len(stream))
    late[len(item_docs):] = np.where(
        rng.random(len(behaviour)) < config.late_share, rng.uniform(0.0, 120.0, len(behaviour)), 0.0
    )
    order = np.argsort(keys + late, kind="stable")

    counts: dict[str, int] = {}
    window = config.batch_minutes * 60.0
    total = len(profiles) + len(stream)
    with _progress_bar(progress, total) as bar:
        # Profiles first: the system of record knew users and businesses long before this period.
        for collection in ("businesses", "users"):
            docs = [e.doc for e in sorted(profiles, key=lambda e: e.ts) if e.collection == collection]
            _append(store, collection, "insert", docs, counts)
            bar.advance(len(docs))
        i = 0
        while i < len(order):
            bucket = math.floor((keys[order[i]] + late[order[i]]) / window)
            groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
            j = i
            while j < len(order) and math.floor((keys[order[j]] + late[order[j]]) / window) == bucket:
                emitted = stream[int(order[j])]
                groups.setdefault((emitted.collection, emitted.op), []).append(emitted.doc)
                j += 1
            for (collection, op), docs in groups.items():
                _append(store, collection, op, docs, counts)
            bar.advance(j - i)
            i = j

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_path = out_dir / GROUND_TRUTH_FILE
    truth = _ground_truth(config, start, end, users, businesses, items, malformed)
    truth_path.write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return SimSummary(
        documents=dict(sorted(counts.items())),
        start=start_dt,
        end=datetime.fromtimestamp(end, timezone.utc),
        cities={name: (city.lat, city.lon) for name, city in CITIES.items()},
        ground_truth_path=truth_path,
        malformed=len(malformed),
        users=len(users),
        businesses=len(businesses),
        items=len(items),
        elapsed_s=round(time.perf_counter() - began, 3),
        malformed_ids=[(m["collection"], m["_id"]) for m in malformed],
    )


def _append(
    store: EventStore, collection: str, op: str, docs: list[dict[str, Any]], counts: dict[str, int]
) -> None:
    if docs:
        store.append(collection, docs, op)
        counts[collection] = counts.get(collection, 0) + len(docs)


class _NoBar:
    def advance(self, n: int) -> None:
        pass


class _RichBar:
    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
        )
        self._task = self._progress.add_task("documents", total=total)

    def __enter__(self) -> _RichBar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)


def _progress_bar(enabled: bool, total: int) -> Any:
    return _RichBar(total) if enabled else nullcontext(_NoBar())


def _render_user(rng: np.random.Generator, user: User) -> dict[str, Any]:
    names = _FIRST_NAMES[user.city]
    return {
        "_id": user.id, "name": f"{names[int(rng.integers(len(names)))]} {user.id[1:]}",
        "city": user.city, "lang": user.lang, "signup": iso_z(user.signup),
    }


# ---- malformed documents ------------------------------------------------------------------------


def _inject_malformed(
    rng: np.random.Generator, item_docs: list[Emitted], behaviour: list[Emitted], share: float
) -> list[dict[str, str]]:
    """Break a few documents the way real sources do: no time, impossible coordinates, a price
    that is not a number. Each of them must end in the dead-letter log, with its reason."""
    eligible = [e for e in item_docs if e.op == "insert"] + behaviour
    if not eligible or share <= 0:
        return []
    count = min(len(eligible), max(3, int(round(share * len(eligible)))))
    chosen = sorted(int(i) for i in rng.choice(len(eligible), size=count, replace=False))
    broken = []
    for k, index in enumerate(chosen):
        emitted = eligible[index]
        problems = ["no timestamp", "bad coordinates"]
        if any(key in emitted.doc for key in PRICE_KEYS):
            problems.append("string price")
        problem = problems[k % len(problems)]
        _corrupt(emitted.doc, problem)
        broken.append({"collection": emitted.collection, "_id": str(emitted.doc["_id"]), "problem": problem})
    return broken


def _corrupt(doc: dict[str, Any], problem: str) -> None:
    if problem == "no timestamp":
        for key in TS_KEYS:
            doc.pop(key, None)
    elif problem == "string price":
        for key in PRICE_KEYS:
            if key in doc:
                doc[key] = "free??"
                return
    else:
        for key in LOCATION_KEYS:
            value = doc.get(key)
            if isinstance(value, dict) and "coordinates" in value:
                value["coordinates"][1] = 123.4
            elif isinstance(value, dict):
                value["latitude" if "latitude" in value else "lat"] = 123.4
            elif isinstance(value, str):
                doc[key] = "123.4," + value.split(",")[1]
            elif isinstance(value, list):
                value[1] = 123.4
            else:
                continue
            return
        doc["latitude" if "latitude" in doc else "lat"] = 123.4


# ---- ground truth ------------------------------------------------------------------------------


def _ground_truth(
    config: SimConfig,
    start: float,
    end: float,
    users: list[User],
    businesses: list[Business],
    items: list[Item],
    malformed: list[dict[str, str]],
) -> dict[str, Any]:
    curves = demand_curves()
    clusters: dict[int, dict[str, Any]] = {}
    for b in businesses:
        entry = clusters.setdefault(b.cluster, {"city": b.city, "category": b.category,
                                                "neighbourhood": b.neighbourhood, "business_ids": []})
        entry["business_ids"].append(b.id)
    return {
        "note": "Hidden truth of a Kairos simulation. Nothing in the product reads this file.",
        "seed": config.seed,
        "start": iso_z(start),
        "end": iso_z(end),
        "config": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(config).items()},
        "cities": {name: {"lat": c.lat, "lon": c.lon, "tz": c.tz, "currency": c.currency}
                   for name, c in CITIES.items()},
        "categories": list(CATEGORIES),
        "base_prices": BASE_PRICES,
        "demand_curves": {c: [round(float(v), 4) for v in curve] for c, curve in curves.items()},
        "demand_curve_index": "local hour of week, Monday 00:00 = 0",
        "model": model_description(),
        "users": [
            {
                "id": u.id, "home_city": u.city, "home": list(u.home),
                "work": list(u.work) if u.work else None,
                "interests": {c: round(float(w), 5) for c, w in zip(CATEGORIES, u.interests, strict=True)},
                "price_sensitivity": u.price_sensitivity, "activity": u.activity,
                "wake_hour": round(u.wake_hour, 2), "sleep_hour": round(u.sleep_hour, 2),
                "trips": [
                    {"city": t.city, "start": iso_z(t.start), "end": iso_z(t.end), "hotel": list(t.hotel)}
                    for t in u.trips
                ],
            }
            for u in users
        ],
        "businesses": [
            {
                "id": b.id, "name": b.name, "category": b.category, "label": b.label, "city": b.city,
                "neighbourhood": b.neighbourhood, "lat": b.lat, "lon": b.lon, "style": b.style,
                "price_level": b.price_level, "cluster": b.cluster,
                "base_price": round(BASE_PRICES[b.city][b.category] * b.price_level, 2),
            }
            for b in businesses
        ],
        "clusters": list(clusters.values()),
        "items": [
            {
                "id": i.id, "business_id": i.business.id, "kind": i.kind, "category": i.category,
                "collection": i.collection, "created": iso_z(i.created), "valid_from": iso_z(i.valid_from),
                "valid_to": iso_z(i.valid_to), "starts_at": iso_z(i.starts_at) if i.starts_at else None,
                "price": i.price, "original_price": i.original_price, "currency": i.currency,
                "update_at": iso_z(i.update_at) if i.update_at else None, "updated_price": i.updated_price,
                "deleted_at": iso_z(i.deleted_at) if i.deleted_at else None,
            }
            for i in items
        ],
        "malformed": malformed,
    }
