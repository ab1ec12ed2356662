"""``kairos bench checkins``: next-category and next-venue prediction on real check-ins.

Real Foursquare check-ins in New York (``tid,label,lat,lon,day,hour,category``: trajectory, user,
venue point, weekday 0-6, hour 0-23, venue category 0-9; visits in order within a trajectory)
stream through the same path as platform events:

1. every row becomes a source document of a ``checkins`` collection and is decoded by
   :mod:`kairos.decoding` with the mapping :data:`CHECKINS_MAPPING` (a check-in is a ``location``
   event with a category; rows it cannot decode go to dead letters and are counted);
2. per user, :class:`flows.steps.UserActivityState` keeps the ``user_activity`` features the flow
   would (home cell, travelling flag);
3. :class:`online.next_intent.IntentLearner` predicts each check-in's category *before* seeing it,
   then learns from it (prequential: learning as events arrive, on the held-out part too).

**Event times are synthesised.** The file has a weekday and an hour but no date. Each user's
trajectories are taken as consecutive weeks in file order (``tid`` order, which is time order per
user); a check-in's local time is ``2024-01-01 (a Monday) + week + day + hour``, plus one second per
earlier check-in in the same hour so that visits keep their order, and its UTC time subtracts the
solar offset of its longitude (the one :func:`online.next_intent.local_time` adds back). Day 0 is
taken to be Monday.

**Hold-out.** With ``--test``, the train file streams first, then the test file is scored. Without
it, the last ``--holdout`` share of each user's trajectories (at least one) in time order is held
out: every train trajectory streams first, then the held-out ones, in time order. Scored: every
held-out check-in that has an earlier check-in in the same trajectory. The model may use the time
of the check-in it predicts (hour, weekday: "what will they want at 9 pm") but not its place.

**Baselines**, computed in the same run on the same stream, learning the same way: global
popularity, the user's own popularity, a first-order Markov chain over categories (population
transitions), and the user's own Markov chain backed off to the population's. Next venue (a venue
is a distinct coordinate pair): global, user and Markov venue popularity against the venues the
next-intent model ranks (candidate venues of the user, after the last venue, and popular near the
last one, each weighted by the probability of its category).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from kairos.bench import emit

COLLECTION = "checkins"
REQUIRED_COLUMNS = ("tid", "label", "lat", "lon", "day", "hour", "category")
#: How check-in documents decode: users at venues, a check-in is a location event with a category.
CHECKINS_MAPPING_YAML = """
collections:
  checkins:
    actor_type: user
    actor_id: [label]
    kind: location
    ts: [ts]
    lat: [lat]
    lon: [lon]
    category: [category]
    required: [location, category]
"""
#: Local midnight of week 0, day 0 (2024-01-01 was a Monday).
EPOCH_MONDAY = datetime(2024, 1, 1)
VENUE_K = 10
#: Venue scores: how much the user's own venues, the venues after the last one and the popular
#: venues near the last one count (chosen by hand on the shape of the problem, not tuned on the test).
VENUE_WEIGHTS = {"user": 1.0, "after_last": 0.7, "near_last": 0.3}
NEAR_RESOLUTION = 7
NEAR_CANDIDATES = 50


def checkins_mapping() -> Any:
    from kairos.decoding import parse_mappings

    return parse_mappings(CHECKINS_MAPPING_YAML, "kairos.bench.checkins")


class CheckinsError(ValueError):
    """The input cannot be benchmarked (missing file or columns); the message says why."""


@dataclass
class Row:
    line: int
    values: dict[str, str]


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a check-ins CSV (any column order, extra columns kept); checks the header."""
    source = Path(path)
    try:
        handle = source.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CheckinsError(f"{source}: cannot read: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise CheckinsError(
                f"{source}: missing column(s) {', '.join(missing)}; expected {','.join(REQUIRED_COLUMNS)}"
            )
        rows = []
        for line, raw in enumerate(reader, start=2):
            rows.append(Row(line, {str(k).strip(): (v or "").strip() for k, v in raw.items() if k is not None}))
    if not rows:
        raise CheckinsError(f"{source}: no check-ins")
    return rows


def _int_in(text: str, low: int, high: int) -> int | None:
    try:
        value = int(float(text))
    except ValueError:
        return None
    return value if low <= value <= high and float(text) == value else None


def solar_offset_hours(lon: float) -> int:
    return max(-12, min(14, round(lon / 15.0)))


def documents(rows: list[Row], week_offsets: dict[str, int] | None = None) -> Iterator[tuple[dict[str, Any], str, int]]:
    """(source document, trajectory id, week) per row, with a synthesised ``ts``.

    A row whose day, hour or category is out of range keeps no ``ts`` (or ``category``), so the
    decoder turns it into a dead letter that says what is missing, like any bad document.
    """
    weeks: dict[str, dict[str, int]] = defaultdict(dict)
    same_hour: Counter[tuple[str, int, int]] = Counter()
    offsets = week_offsets or {}
    for row in rows:
        v = row.values
        user, tid = v["label"], v["tid"]
        user_weeks = weeks[user]
        if tid not in user_weeks:
            user_weeks[tid] = offsets.get(user, 0) + len(user_weeks)
        week = user_weeks[tid]
        doc: dict[str, Any] = {"_id": f"{tid}:{row.line}", "label": user, "lat": v["lat"], "lon": v["lon"],
                               "tid": tid, "line": row.line}
        day, hour = _int_in(v["day"], 0, 6), _int_in(v["hour"], 0, 23)
        category = _int_in(v["category"], 0, 9)
        if category is not None:
            doc["category"] = str(category)
        if day is not None and hour is not None:
            try:
                lon = float(v["lon"])
            except ValueError:
                lon = float("nan")
            offset = solar_offset_hours(lon) if math.isfinite(lon) else 0
            key = (tid, day, hour)
            local = EPOCH_MONDAY + timedelta(weeks=week, days=day, hours=hour, seconds=same_hour[key])
            same_hour[key] += 1
            doc["ts"] = (local - timedelta(hours=offset)).replace(tzinfo=timezone.utc).isoformat()
        yield doc, tid, week


def holdout_trajectories(rows: list[Row], share: float) -> set[str]:
    """The last ``share`` of each user's trajectories (at least one, never all but when a user has one)."""
    per_user: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        tids = per_user[row.values["label"]]
        if row.values["tid"] not in tids:
            tids.append(row.values["tid"])
    held: set[str] = set()
    for tids in per_user.values():
        n = max(1, int(round(len(tids) * share)))
        if len(tids) > 1:
            n = min(n, len(tids) - 1)
        held.update(tids[-n:])
    return held


# -- baselines ------------------------------------------------------------------------------------


def ranked(counts: Counter[Any] | None, k: int) -> list[Any]:
    """Top ``k`` keys by count; ties by key so runs are reproducible."""
    if not counts:
        return []
    return [key for key, _ in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:k]]


def backed_off(k: int, *sources: list[Any]) -> list[Any]:
    """First ``k`` distinct keys from the sources in order (a model backed off to coarser ones)."""
    out: list[Any] = []
    for source in sources:
        for key in source:
            if key not in out:
                out.append(key)
                if len(out) == k:
                    return out
    return out


@dataclass
class Hits:
    n: int = 0
    hits: Counter[int] = field(default_factory=Counter)

    def add(self, truth: Any, guesses: list[Any], ks: Iterable[int]) -> None:
        self.n += 1
        for k in ks:
            self.hits[k] += truth in guesses[:k]

    def rate(self, k: int) -> float:
        return self.hits[k] / self.n if self.n else 0.0


CATEGORY_MODELS = (
    "next_intent", "next_intent_time_unknown", "global_popularity", "user_popularity", "markov", "markov_user",
    "user_daypart",
)
#: Not among the issue's baselines: a time-aware reference, reported beside them (see the docs).
REFERENCES = ("user_daypart",)
VENUE_MODELS = ("next_intent", "global_popularity", "user_popularity", "markov")


def run_checkins(train: str | Path, test: str | Path | None = None, holdout: float = 0.2,
                 progress: bool = False) -> dict[str, Any]:
    """Stream the check-ins and score every model; returns the result dictionary."""
    import h3

    from flows.steps import FeatureParams, UserActivityState
    from kairos.decoding import decode
    from kairos.schema import DeadLetter, Event
    from kairos.stores.event_store import SourceRecord
    from online.next_intent import IntentLearner, daypart, local_time, top_k

    started = time.perf_counter()
    if not 0 < holdout < 1:
        raise CheckinsError(f"--holdout must be between 0 and 1 (exclusive), not {holdout}")
    train_rows = read_rows(train)
    test_rows = read_rows(test) if test is not None else []
    if test is None:
        held = holdout_trajectories(train_rows, holdout)
        # Weeks are counted over the whole file, so held-out weeks follow the user's train weeks.
        all_docs = list(documents(train_rows))
        docs_by_phase = {
            "train": [d for d, tid, _ in all_docs if tid not in held],
            "test": [d for d, tid, _ in all_docs if tid in held],
        }
    else:
        train_docs = list(documents(train_rows))
        last_week: dict[str, int] = {}
        for doc, _, week in train_docs:
            last_week[doc["label"]] = max(last_week.get(doc["label"], -1), week)
        # A test user's weeks follow their train weeks.
        test_docs = list(documents(test_rows, {u: w + 1 for u, w in last_week.items()}))
        docs_by_phase = {"train": [d for d, _, _ in train_docs], "test": [d for d, _, _ in test_docs]}

    mappings = checkins_mapping()
    appended = datetime(2024, 1, 1, tzinfo=timezone.utc)
    dead: Counter[str] = Counter()
    stream: list[tuple[str, Event]] = []
    for phase in ("train", "test"):
        events = []
        for position, doc in enumerate(docs_by_phase[phase]):
            decoded = decode(SourceRecord(COLLECTION, f"{phase}:{position}", "insert", doc, appended), mappings)
            if isinstance(decoded, DeadLetter):
                dead[decoded.reason] += 1
            else:
                events.append(decoded)
        events.sort(key=lambda e: (e.ts, int(e.attrs.get("line", 0))))
        stream.extend((phase, event) for event in events)

    params = FeatureParams()
    activity: dict[str, UserActivityState] = {}
    travelling_now: dict[str, bool] = {}
    learner = IntentLearner()
    # The same model asked right after the previous check-in, not knowing when the next one comes.
    blind_learner = IntentLearner(time_known=False)

    cat_global: Counter[str] = Counter()
    cat_user: dict[str, Counter[str]] = defaultdict(Counter)
    cat_after: dict[str, Counter[str]] = defaultdict(Counter)
    cat_user_after: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    cat_user_daypart: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    venue_global: Counter[tuple[float, float]] = Counter()
    venue_user: dict[str, Counter[tuple[float, float]]] = defaultdict(Counter)
    venue_after: dict[tuple[float, float], Counter[tuple[float, float]]] = defaultdict(Counter)
    venue_near: dict[str, Counter[tuple[float, float]]] = defaultdict(Counter)
    venue_category: dict[tuple[float, float], Counter[str]] = defaultdict(Counter)
    venue_main_category: dict[tuple[float, float], str] = {}
    near_cache: dict[str, Counter[tuple[float, float]]] = {}
    last: dict[str, tuple[str, str, tuple[float, float]]] = {}  # user -> (tid, category, venue)

    category_hits = {name: Hits() for name in CATEGORY_MODELS}
    venue_hits = {name: Hits() for name in VENUE_MODELS}
    global_top: list[tuple[float, float]] = []
    trajectories: dict[str, set[str]] = {"train": set(), "test": set()}
    users: set[str] = set()

    for step, (phase, event) in enumerate(stream):
        user, category = event.actor_id, str(event.category)
        tid = str(event.attrs.get("tid"))
        venue = (float(event.lat), float(event.lon))
        trajectories[phase].add(tid)
        users.add(user)
        previous = last.get(user)
        scored = phase == "test" and previous is not None and previous[0] == tid
        if step % 500 == 0:
            global_top = ranked(venue_global, VENUE_K)

        part = daypart(local_time(event.ts.timestamp(), event.lon).hour)
        probabilities = learner.learn_event(event, travelling=travelling_now.get(user, False))
        blind = blind_learner.learn_event(event, travelling=travelling_now.get(user, False))
        if scored:
            assert previous is not None and probabilities is not None
            prev_cat, prev_venue = previous[1], previous[2]
            top_global = ranked(cat_global, 3)
            top_user = backed_off(3, ranked(cat_user[user], 3), top_global)
            top_markov = backed_off(3, ranked(cat_after[prev_cat], 3), top_global)
            top_markov_user = backed_off(3, ranked(cat_user_after[(user, prev_cat)], 3), top_markov)
            top_daypart = backed_off(3, ranked(cat_user_daypart[(user, part)], 3), top_user)
            for name, guesses in (
                ("next_intent", top_k(probabilities, 3)),
                ("next_intent_time_unknown", top_k(blind or {}, 3)),
                ("global_popularity", top_global),
                ("user_popularity", top_user),
                ("markov", top_markov),
                ("markov_user", top_markov_user),
                ("user_daypart", top_daypart),
            ):
                category_hits[name].add(category, guesses, (1, 3))

            user_venues = ranked(venue_user[user], VENUE_K)
            venue_hits["global_popularity"].add(venue, global_top, (VENUE_K,))
            venue_hits["user_popularity"].add(venue, backed_off(VENUE_K, user_venues, global_top), (VENUE_K,))
            venue_hits["markov"].add(
                venue, backed_off(VENUE_K, ranked(venue_after[prev_venue], VENUE_K), user_venues, global_top),
                (VENUE_K,),
            )
            guesses = venue_guesses(
                probabilities, venue_user[user], venue_after[prev_venue],
                _near(venue_near, near_cache, h3, prev_venue), venue_main_category, global_top,
            )
            venue_hits["next_intent"].add(venue, guesses, (VENUE_K,))

        # Learn (every model, every event, after predicting it).
        state = activity.get(user)
        if state is None:
            state = activity[user] = UserActivityState()
        row = state.update(event, params)
        travelling_now[user] = bool(row.get("travelling"))
        cat_global[category] += 1
        cat_user[user][category] += 1
        cat_user_daypart[(user, part)][category] += 1
        if previous is not None:
            cat_after[previous[1]][category] += 1
            cat_user_after[(user, previous[1])][category] += 1
            venue_after[previous[2]][venue] += 1
        venue_global[venue] += 1
        venue_user[user][venue] += 1
        cell = h3.latlng_to_cell(venue[0], venue[1], NEAR_RESOLUTION)
        venue_near[cell][venue] += 1
        for neighbour in h3.grid_disk(cell, 1):  # the merged counts around these cells changed
            near_cache.pop(neighbour, None)
        counts = venue_category[venue]
        counts[category] += 1
        main = venue_main_category.get(venue)
        # The venue's most frequent category, ties to the smaller name (as ``ranked`` breaks them).
        if main is None or (-counts[category], category) < (-counts[main], main):
            venue_main_category[venue] = category
        last[user] = (tid, category, venue)
        if progress and step % 5000 == 0:
            print(f"  {step:>7} / {len(stream)} check-ins", file=sys.stderr)

    elapsed = time.perf_counter() - started
    categories = {name: {"acc@1": round(h.rate(1), 4), "acc@3": round(h.rate(3), 4)}
                  for name, h in category_hits.items()}
    baselines = {k: v for k, v in categories.items() if not k.startswith("next_intent") and k not in REFERENCES}
    best = max(baselines, key=lambda k: baselines[k]["acc@1"])
    lift = 100 * (categories["next_intent"]["acc@1"] - baselines[best]["acc@1"])
    venues = {name: {f"acc@{VENUE_K}": round(h.rate(VENUE_K), 4)} for name, h in venue_hits.items()}
    venue_baselines = {k: v for k, v in venues.items() if k != "next_intent"}
    best_venue = max(venue_baselines, key=lambda k: venue_baselines[k][f"acc@{VENUE_K}"])
    n_rows = len(train_rows) + len(test_rows)
    return {
        "benchmark": "checkins",
        "train": str(train),
        "test": str(test) if test is not None else None,
        "holdout": None if test is not None else f"last {holdout:.0%} of each user's trajectories (at least 1)",
        "rows": n_rows,
        "events": len(stream),
        "dead_letters": sum(dead.values()),
        "dead_letter_reasons": dict(dead.most_common(5)),
        "users": len(users),
        "trajectories": {phase: len(t) for phase, t in trajectories.items()},
        "scored_predictions": category_hits["next_intent"].n,
        "event_times": "synthesised: each user's trajectories are consecutive weeks; day 0 = Monday",
        "next_category": categories,
        "best_baseline": {"name": best, "acc@1": baselines[best]["acc@1"]},
        "lift_acc@1_points": round(lift, 2),
        "lift_over_time_aware_reference_points": round(
            100 * (categories["next_intent"]["acc@1"] - categories["user_daypart"]["acc@1"]), 2),
        "goal": {"description": "next_intent Acc@1 >= best baseline + 5 points", "met": lift >= 5.0},
        "next_venue": venues,
        "best_venue_baseline": {"name": best_venue, f"acc@{VENUE_K}": venue_baselines[best_venue][f"acc@{VENUE_K}"]},
        "venue_lift_points": round(100 * (venues["next_intent"][f"acc@{VENUE_K}"]
                                          - venue_baselines[best_venue][f"acc@{VENUE_K}"]), 2),
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(stream) / elapsed, 1) if elapsed > 0 else None,
    }


def _near(index: dict[str, Counter[Any]], cache: dict[str, Counter[Any]], h3: Any,
          point: tuple[float, float]) -> Counter[Any]:
    """Venue counts in the cell of ``point`` and its neighbours (resolution :data:`NEAR_RESOLUTION`),
    cached per cell until a check-in lands around it."""
    centre = h3.latlng_to_cell(point[0], point[1], NEAR_RESOLUTION)
    near = cache.get(centre)
    if near is None:
        near = Counter()
        for cell in h3.grid_disk(centre, 1):
            counts = index.get(cell)
            if counts:
                near.update(counts)
        cache[centre] = near
    return near


def venue_guesses(
    probabilities: dict[str, float],
    user_venues: Counter[Any],
    after_last: Counter[Any],
    near_last: Counter[Any],
    venue_category: dict[Any, str],
    global_top: list[Any],
    k: int = VENUE_K,
) -> list[Any]:
    """Candidate venues scored by habit (own, after the last venue, popular nearby) times the
    probability the next-intent model gives their category (``venue_category``: venue -> its most
    frequent category)."""
    scores: Counter[Any] = Counter()
    for weight, counts, limit in (
        (VENUE_WEIGHTS["user"], user_venues, None),
        (VENUE_WEIGHTS["after_last"], after_last, None),
        (VENUE_WEIGHTS["near_last"], near_last, NEAR_CANDIDATES),
    ):
        total = sum(counts.values())
        if not total:
            continue
        items = counts.most_common(limit) if limit else counts.items()
        for venue, count in items:
            scores[venue] += weight * count / total
    floor = 1.0 / max(10, len(probabilities) * 10)
    for venue in scores:
        category = venue_category.get(venue)
        p = probabilities.get(category, 0.0) if category is not None else 0.0
        scores[venue] *= max(p, floor)
    return backed_off(k, ranked(scores, k), global_top)


def register(app: typer.Typer) -> None:
    @app.command("checkins")
    def checkins(
        train: Annotated[Path, typer.Option("--train", help="check-ins CSV (tid,label,lat,lon,day,hour,category)")],
        test: Annotated[
            Path | None, typer.Option("--test", help="held-out check-ins CSV; default: hold out per user")
        ] = None,
        holdout: float = typer.Option(0.2, help="share of each user's last trajectories held out (without --test)"),
        as_json: bool = typer.Option(False, "--json", help="print the whole result as JSON"),
        quiet: bool = typer.Option(False, help="no progress lines on stderr"),
    ) -> None:
        """Next-category (Acc@1/@3) and next-venue (Acc@10) prediction on real check-ins, beside baselines."""
        try:
            result = run_checkins(train, test, holdout, progress=not quiet)
        except CheckinsError as exc:
            raise typer.BadParameter(str(exc)) from None
        result["command"] = "kairos bench checkins " + " ".join(sys.argv[3:])
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}
        if as_json:
            emit(json.loads(json.dumps(result, default=float)))
            return
        typer.echo(f"{result['events']} check-ins, {result['scored_predictions']} scored predictions "
                   f"({result['dead_letters']} dead letters), {result['seconds']} s")
        for name, numbers in result["next_category"].items():
            typer.echo(f"  category {name:>18}  Acc@1 {100 * numbers['acc@1']:5.1f} %  "
                       f"Acc@3 {100 * numbers['acc@3']:5.1f} %")
        for name, numbers in result["next_venue"].items():
            typer.echo(f"  venue    {name:>18}  Acc@{VENUE_K} {100 * numbers[f'acc@{VENUE_K}']:5.1f} %")
        typer.echo(f"goal (next_intent Acc@1 >= best baseline + 5 points): "
                   f"{'met' if result['goal']['met'] else 'NOT met'} ({result['lift_acc@1_points']:+.1f} points)")
