"""A seeded city simulator: New York and Mumbai, businesses that publish offers, events and
service slots in their own document shapes, and users whose hidden tastes, rhythms, trips and
price sensitivity drive pings, searches, voice queries, views, clicks, saves and orders.

>>> import tempfile, pathlib
>>> from datetime import datetime, timezone
>>> from kairos.stores.event_store import SqliteEventStore
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> config = SimConfig(days=1, n_users=20, n_businesses=12, start=datetime(2024, 5, 6, tzinfo=timezone.utc))
>>> summary = simulate(SqliteEventStore(tmp / "events.sqlite"), config, tmp / "sim")
>>> summary.documents["pings"] > 0, summary.ground_truth_path.name
(True, 'ground_truth.json')

Modules: ``model`` (the hidden behaviour model, :func:`engagement_probability`), ``world``
(population), ``items`` (catalogue and document styles), ``behaviour`` (user timelines),
``runner`` (:func:`simulate`).
"""

from kairos.simulate.model import CITIES, demand_curves, engagement_probability
from kairos.simulate.runner import GROUND_TRUTH_FILE, SimConfig, SimSummary, simulate

__all__ = [
    "CITIES",
    "GROUND_TRUTH_FILE",
    "SimConfig",
    "SimSummary",
    "demand_curves",
    "engagement_probability",
    "simulate",
]
