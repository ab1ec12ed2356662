"""Next intent: per-user histories, the online model, the learner on events, and the check-ins benchmark."""

from __future__ import annotations

import csv
import json
import math
import pickle
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from river import base
from typer.testing import CliRunner

from kairos.bench.checkins import (
    CheckinsError,
    documents,
    holdout_trajectories,
    read_rows,
    run_checkins,
    venue_guesses,
)
from kairos.cli import app
from kairos.schema import Event
from online.next_intent import (
    EVIDENCE,
    IntentHistory,
    IntentLearner,
    NextIntent,
    daypart,
    intent_hint,
    local_time,
    top_k,
)

T0 = datetime(2026, 5, 4, tzinfo=UTC)  # a Monday
HOUR = 3600.0


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return T0 + timedelta(days=day, hours=hour, minutes=minute)


def event(user: str, when: datetime, category: str | None, kind: str = "purchase", lat: float = 40.75,
          lon: float = 0.0, cell: str | None = None, actor_type: str = "user") -> Event:
    return Event(event_id=f"{user}-{when.isoformat()}-{category}", ts=when, actor_type=actor_type, actor_id=user,
                 kind=kind, category=category, lat=lat, lon=lon, cell=cell)


# -- history -----------------------------------------------------------------------------------------


def test_history_counts_habits_by_time_sequence_and_place() -> None:
    history = IntentHistory()
    history.update(at(0, 8).timestamp(), at(0, 8), "coffee", cell="home")
    history.update(at(0, 13).timestamp(), at(0, 13), "food", cell="office", before_cell="home")
    history.update(at(1, 8).timestamp(), at(1, 8), "coffee", cell="home", before_cell="office")
    x = history.features(at(1, 9).timestamp(), at(1, 9), cell="home", travelling=True)
    assert x["user"] == {"coffee": 2.0, "food": 1.0}
    assert x["last"] == "coffee" and x["last2"] == "food"
    assert x["user_after_last"] == {"food": 1.0}  # after coffee came food
    assert x["hours_since_last"] == pytest.approx(1.0)
    assert (x["hour"], x["weekday"], x["daypart"], x["weekend"], x["travelling"]) == (9, 1, 3, False, True)
    assert x["user_daypart"] == {}  # 9 am opens daypart 3 (9-12); the 8 am coffees were in daypart 2
    assert x["user_near_hour"] == {"coffee": 2.0}  # 8 am is within an hour of 9 am, on both days
    assert x["user_weekday_near_hour"] == {"coffee": 1.0}  # only Tuesday's
    assert x["user_at_cell"] == {"food": 1.0}  # after being at home this user went for food
    assert x["user_recent"] == {"coffee": 2.0, "food": 1.0}
    assert x["cell"] == "home"


def test_near_hour_wraps_around_midnight_and_the_week() -> None:
    history = IntentHistory()
    sunday_late = at(6, 23, 30)
    history.update(sunday_late.timestamp(), sunday_late, "culture")
    monday = at(7, 0, 15)
    x = history.features(monday.timestamp(), monday)
    assert x["user_near_hour"] == {"culture": 1.0}
    assert x["user_weekday_near_hour"] == {"culture": 1.0}  # Sunday 23:00 is an hour before Monday 00:00


def test_recent_forgets_after_a_week_and_cells_are_bounded() -> None:
    history = IntentHistory(max_cells=3)
    for i in range(6):
        when = at(i * 2, 12)
        history.update(when.timestamp(), when, "food", before_cell=f"c{i}")
    assert list(history.at_cell) == ["c3", "c4", "c5"]
    now = at(12, 13)
    assert history.features(now.timestamp(), now)["user_recent"] == {"food": 3.0}  # days 6, 8 and 10
    assert history.features(now.timestamp(), now)["user"] == {"food": 6.0}


def test_daypart_and_local_time() -> None:
    assert [daypart(h) for h in (0, 2, 3, 11, 12, 23)] == [0, 0, 1, 3, 4, 7]
    ts = datetime(2026, 5, 1, 22, 0, tzinfo=UTC).timestamp()
    assert local_time(ts, -73.98).hour == 17  # New York, solar time (UTC-5)
    assert local_time(ts, 72.88).hour == 3 and local_time(ts, 72.88).day == 2  # Mumbai, next day
    assert local_time(ts, None).hour == 22 and local_time(ts, math.nan).hour == 22


# -- the model ---------------------------------------------------------------------------------------


def routine_stream(days: int, seed: int = 0) -> list[tuple[datetime, str]]:
    """A habit keyed on the time of day: coffee mornings, food at lunch, then spa on Mon/Wed/Fri
    evenings and fitness on the other evenings; 15 % noise."""
    rng = random.Random(seed)
    out = []
    for d in range(days):
        evening = "spa" if d % 7 in (0, 2, 4) else "fitness"
        for hour, category in ((8, "coffee"), (13, "food"), (19, evening)):
            if rng.random() < 0.15:
                category = rng.choice(["retail", "culture", "coffee", "food"])
            out.append((at(d, hour, rng.randint(0, 40)), category))
    return out


def prequential(learner: IntentLearner, stream: list[tuple[datetime, str]], user: str = "u",
                score_from: int = 0) -> float:
    hits = total = 0
    for i, (when, category) in enumerate(stream):
        probabilities = learner.learn_event(event(user, when, category))
        if i >= score_from and probabilities:
            total += 1
            hits += top_k(probabilities, 1)[0] == category
    return hits / total


def test_learns_a_time_of_day_routine_far_better_than_popularity() -> None:
    stream = routine_stream(70)
    accuracy = prequential(IntentLearner(), stream, score_from=90)
    # The most popular category wins about a third of the time; the routine is ~85 % predictable.
    assert accuracy > 0.7


def test_time_matters_only_when_the_model_knows_it() -> None:
    stream = routine_stream(70)
    knows = prequential(IntentLearner(), stream, score_from=90)
    blind = prequential(IntentLearner(time_known=False), stream, score_from=90)
    assert knows > blind + 0.05


def test_probabilities_are_a_distribution_over_seen_categories() -> None:
    model = NextIntent()
    assert model.predict_proba_one({}) == {} and model.predict_one({}) is None
    model.learn_one({"last": None}, "coffee")
    assert model.predict_proba_one({}) == {"coffee": 1.0}
    model.learn_one({"last": "coffee"}, "spa")  # a category appears mid-stream
    probabilities = model.predict_proba_one({"last": "coffee", "user": {"spa": 3.0}})
    assert set(probabilities) == {"coffee", "spa"}
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert all(0 < p < 1 for p in probabilities.values())


def test_population_transitions_carry_over_to_a_new_user() -> None:
    model = NextIntent()
    rng = random.Random(1)
    for _ in range(400):  # everyone goes to the gym after coffee, and to food after the gym
        first = rng.choice(["coffee", "fitness"])
        model.learn_one({"last": first}, "fitness" if first == "coffee" else "food")
    assert model.predict_one({"last": "coffee", "user": {}}) == "fitness"
    assert model.predict_one({"last": "fitness", "user": {}}) == "food"


def test_travel_changes_the_guess() -> None:
    model = NextIntent()
    for i in range(300):  # at home people get coffee; travellers look for a spa
        travelling = i % 2 == 0
        model.learn_one({"travelling": travelling}, "spa" if travelling else "coffee")
    assert model.predict_one({"travelling": True}) == "spa"
    assert model.predict_one({"travelling": False}) == "coffee"


def test_explain_names_the_evidence() -> None:
    learner = IntentLearner()
    prequential(learner, routine_stream(30))
    x = learner.history("u").features(at(31, 19).timestamp(), at(31, 19))
    contributions = learner.model.explain_one(x, "spa")
    assert set(contributions) == set(EVIDENCE)
    assert learner.model.explain_one(x, "unknown") == {}
    # The score is the contributions plus the category's biases: the softmax of those is the answer.
    scores = {c: sum(learner.model.explain_one(x, c).values()) + learner.model.bias.get(c, 0.0)
              + learner.model.bias.get(f"{c}|home", 0.0) for c in learner.model.classes}
    top = max(scores.values())
    total = sum(math.exp(s - top) for s in scores.values())
    expected = {c: math.exp(s - top) / total for c, s in scores.items()}
    got = learner.model.predict_proba_one(x)
    assert got == pytest.approx(expected)


def test_parameters_are_checked_and_the_model_is_a_river_classifier() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        NextIntent(learning_rate=0)
    with pytest.raises(ValueError, match="strength"):
        NextIntent(user_strength=0)
    model = NextIntent(learning_rate=0.1)
    assert isinstance(model, base.Classifier) and model._multiclass
    assert model.clone().learning_rate == 0.1


def test_pickle_keeps_what_was_learned() -> None:
    learner = IntentLearner()
    prequential(learner, routine_stream(20))
    copy = pickle.loads(pickle.dumps(learner))
    x = learner.history("u").features(at(21, 8).timestamp(), at(21, 8))
    assert copy.model.predict_proba_one(x) == pytest.approx(learner.model.predict_proba_one(x))


# -- the learner on canonical events ---------------------------------------------------------------------


def test_learner_uses_only_user_intent_events_with_a_category() -> None:
    learner = IntentLearner()
    assert learner.learn_event(event("u", at(0, 8), None, kind="location")) is None
    assert learner.learn_event(event("u", at(0, 8), "coffee", kind="dismiss")) is None
    assert learner.learn_event(event("b", at(0, 8), "coffee", kind="offer", actor_type="business")) is None
    assert learner.model.n_seen == 0
    assert learner.learn_event(event("u", at(0, 8), "coffee", kind="search")) == {}  # nothing learned yet
    assert learner.learn_event(event("u", at(0, 9), "spa", kind="location")) == {"coffee": 1.0}
    assert learner.model.n_seen == 2 and learner.history("u").last[1] == "spa"


def test_learner_returns_the_prediction_made_before_learning() -> None:
    learner = IntentLearner()
    prequential(learner, routine_stream(20))
    when = at(20, 19)
    x = learner.history("u").features(when.timestamp(), local_time(when.timestamp(), 0.0), cell=None)
    expected = learner.model.predict_proba_one(x)
    assert learner.learn_event(event("u", when, "spa")) == pytest.approx(expected)


def test_predict_for_a_location_change_and_the_hint() -> None:
    learner = IntentLearner()
    prequential(learner, routine_stream(40))
    evening = learner.predict("u", at(41, 19), lon=0.0)
    assert top_k(evening, 1)[0] in ("spa", "fitness") and sum(evening.values()) == pytest.approx(1.0)
    morning = learner.predict("u", at(42, 8), lon=0.0)
    assert top_k(morning, 1) == ["coffee"]
    assert intent_hint(morning) == "you may want a coffee now"
    # A user never seen gets the population's guess, not an error.
    assert set(learner.predict("stranger", at(42, 8))) == set(learner.model.classes)


def test_intent_hint_and_top_k() -> None:
    assert intent_hint({"spa": 0.6, "food": 0.4}) == "you may want a spa now"
    assert intent_hint({"karaoke": 0.9}) == "you may want karaoke now"
    assert intent_hint({"spa": 0.25, "food": 0.25, "coffee": 0.5}, min_probability=0.6) is None
    assert intent_hint({}) is None
    assert top_k({"b": 0.5, "a": 0.5, "c": 0.1}, 2) == ["a", "b"]


# -- the check-ins benchmark ---------------------------------------------------------------------------------


COLUMNS = ["tid", "label", "lat", "lon", "day", "hour", "category"]


def write_checkins(path: Path, users: int = 12, weeks: int = 6, seed: int = 3, extra: list[list] | None = None) -> Path:
    """Synthetic check-ins with a weekly routine per user (so there is something to learn)."""
    rng = random.Random(seed)
    venues = {c: [(40.70 + rng.random() * 0.1, -74.0 + rng.random() * 0.1) for _ in range(4)] for c in range(10)}
    rows = []
    tid = 100
    for user in range(users):
        habits = {hour: rng.randrange(10) for hour in (8, 12, 18, 21)}
        for _ in range(weeks):
            tid += 1
            for day in range(7):
                for hour, category in habits.items():
                    if rng.random() < 0.35:
                        continue
                    if rng.random() < 0.2:
                        category = rng.randrange(10)
                    lat, lon = venues[category][user % 4]
                    rows.append([tid, user, lat, lon, day, hour, category])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows + (extra or []))
    return path


def test_documents_synthesise_ordered_times() -> None:
    rows = [
        {"tid": "7", "label": "u", "lat": "40.7", "lon": "-74.0", "day": "0", "hour": "9", "category": "1"},
        {"tid": "7", "label": "u", "lat": "40.7", "lon": "-74.0", "day": "0", "hour": "9", "category": "2"},
        {"tid": "8", "label": "u", "lat": "40.7", "lon": "-74.0", "day": "6", "hour": "23", "category": "3"},
        {"tid": "9", "label": "v", "lat": "40.7", "lon": "-74.0", "day": "2", "hour": "25", "category": "12"},
    ]
    from kairos.bench.checkins import Row

    docs = list(documents([Row(i + 2, r) for i, r in enumerate(rows)]))
    times = [datetime.fromisoformat(d["ts"]) for d, _, _ in docs[:3]]
    # Monday 09:00 local in New York (solar UTC-5) is 14:00 UTC; the second visit one second later.
    assert times[0] == datetime(2024, 1, 1, 14, 0, tzinfo=UTC)
    assert times[1] - times[0] == timedelta(seconds=1)
    assert times[2] == datetime(2024, 1, 15, 4, 0, tzinfo=UTC)  # week 1, Sunday 23:00 local
    assert [week for _, _, week in docs] == [0, 0, 1, 0]
    assert "ts" not in docs[3][0] and "category" not in docs[3][0]  # out of range: left for dead letters


def test_holdout_takes_each_users_last_trajectories(tmp_path: Path) -> None:
    rows = read_rows(write_checkins(tmp_path / "c.csv", users=3, weeks=5))
    held = holdout_trajectories(rows, 0.2)
    per_user: dict[str, list[str]] = {}
    for row in rows:
        tids = per_user.setdefault(row.values["label"], [])
        if row.values["tid"] not in tids:
            tids.append(row.values["tid"])
    assert held == {tids[-1] for tids in per_user.values()}
    assert len(holdout_trajectories(rows, 0.5)) == 3 * 2  # round(2.5) is 2 of each user's 5
    assert len(holdout_trajectories(rows, 0.99)) == 3 * 4  # never all of a user's trajectories


def test_benchmark_on_synthetic_routines(tmp_path: Path) -> None:
    path = write_checkins(tmp_path / "c.csv")
    result = run_checkins(path)
    assert result["events"] == result["rows"] and result["dead_letters"] == 0
    assert result["users"] == 12 and result["trajectories"]["test"] == 12  # one of six weeks each
    assert result["scored_predictions"] > 100
    categories = result["next_category"]
    assert set(categories) >= {"next_intent", "global_popularity", "user_popularity", "markov", "markov_user"}
    for numbers in categories.values():
        assert 0 <= numbers["acc@1"] <= numbers["acc@3"] <= 1
    # Routines keyed on the hour: the next-intent model must beat every baseline clearly.
    assert result["best_baseline"]["name"] in ("global_popularity", "user_popularity", "markov", "markov_user")
    assert result["lift_acc@1_points"] == pytest.approx(
        100 * (categories["next_intent"]["acc@1"] - result["best_baseline"]["acc@1"]), abs=0.01)
    assert result["lift_acc@1_points"] > 10 and result["goal"]["met"] is True
    assert set(result["next_venue"]) == {"next_intent", "global_popularity", "user_popularity", "markov"}
    assert all(0 <= v["acc@10"] <= 1 for v in result["next_venue"].values())


def test_benchmark_sends_bad_rows_to_dead_letters(tmp_path: Path) -> None:
    bad = [[9001, 0, 40.7, -74.0, 9, 10, 1],  # day 9
           [9001, 0, 40.7, -74.0, 1, 10, 12],  # category 12
           [9001, 0, "north", -74.0, 1, 10, 1],  # latitude not a number
           [9001, 0, 95.0, -74.0, 1, 10, 1]]  # latitude out of range
    path = write_checkins(tmp_path / "c.csv", users=4, weeks=3, extra=bad)
    result = run_checkins(path)
    assert result["dead_letters"] == 4 and result["events"] == result["rows"] - 4
    reasons = " | ".join(result["dead_letter_reasons"])
    assert "no timestamp" in reasons and "no category" in reasons and "latitude" in reasons


def test_benchmark_with_a_separate_test_file(tmp_path: Path) -> None:
    train = write_checkins(tmp_path / "train.csv", users=6, weeks=4, seed=5)
    test = write_checkins(tmp_path / "test.csv", users=6, weeks=1, seed=5)
    result = run_checkins(train, test)
    assert result["test"] == str(test) and result["holdout"] is None
    assert result["trajectories"] == {"train": 24, "test": 6}
    assert result["rows"] == len(read_rows(train)) + len(read_rows(test))
    assert result["scored_predictions"] > 0


def test_benchmark_input_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckinsError, match="cannot read"):
        run_checkins(tmp_path / "missing.csv")
    (tmp_path / "cols.csv").write_text("tid,label,lat,lon,day\n1,2,3,4,5\n")
    with pytest.raises(CheckinsError, match="missing column.*hour, category"):
        run_checkins(tmp_path / "cols.csv")
    (tmp_path / "empty.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(CheckinsError, match="no check-ins"):
        run_checkins(tmp_path / "empty.csv")
    with pytest.raises(CheckinsError, match="holdout"):
        run_checkins(write_checkins(tmp_path / "ok.csv", users=2, weeks=2), holdout=1.0)


def test_columns_in_any_order_with_extras(tmp_path: Path) -> None:
    source = read_rows(write_checkins(tmp_path / "c.csv", users=3, weeks=3))
    shuffled = tmp_path / "shuffled.csv"
    order = ["category", "note", "hour", "day", "lon", "lat", "label", "tid"]
    with shuffled.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(order)
        for row in source:
            writer.writerow([row.values.get(c, "x") for c in order])
    assert run_checkins(shuffled)["next_category"] == run_checkins(tmp_path / "c.csv")["next_category"]


def test_venue_guesses_weigh_habits_by_the_category_probability() -> None:
    from collections import Counter

    home, gym, bar = (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)
    categories = {home: "0", gym: "5", bar: "4"}
    habits = Counter({home: 5, gym: 3, bar: 1})
    # The model says "bar" category is what comes next: the bar goes first despite fewer visits.
    guesses = venue_guesses({"4": 0.9, "0": 0.05, "5": 0.05}, habits, Counter(), Counter(), categories, [], k=3)
    assert guesses == [bar, home, gym]
    # Backs off to popular venues to fill the list.
    assert venue_guesses({}, Counter(), Counter(), Counter(), {}, [gym, bar], k=3) == [gym, bar]


def test_cli_prints_json_and_rejects_bad_input(tmp_path: Path) -> None:
    path = write_checkins(tmp_path / "c.csv", users=3, weeks=3)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "checkins", "--train", str(path), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["benchmark"] == "checkins" and "next_category" in body and body["machine"]["cpus"] >= 1
    text = runner.invoke(app, ["bench", "checkins", "--train", str(path), "--quiet"])
    assert text.exit_code == 0 and "Acc@1" in text.stdout and "goal" in text.stdout
    bad = runner.invoke(app, ["bench", "checkins", "--train", str(tmp_path / "nope.csv")])
    assert bad.exit_code == 2 and "cannot read" in bad.output
