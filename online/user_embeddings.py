"""User embeddings: a time-decayed average of what each user engaged with, in MiniLM space.

Every search, voice query and item engagement moves the user's vector towards the embedding of its
text (the query or transcript, or the item's title and description), weighted by how much the
action says (a purchase more than a view, :data:`ENGAGEMENT_WEIGHTS`) and decayed with event time
so that last week's tastes count half as much as today's (``half_life_s``). The ranker compares it
with an item's embedding by cosine ("taste match").

The state of one user is an :class:`EmbeddingState`: the decayed weighted *sum* of unit vectors,
the decayed total weight and the time the decay is anchored at. Keeping the sum (not the
normalised mean) makes an update O(dim) and exact in any arrival order: a late event is decayed to
the anchor instead of moving it back (:func:`decayed_update`, pure and tested on its own).

States live beside the features, chosen by ``KAIROS_PROFILE`` like Feast's online store: SQLite
under ``KAIROS_HOME`` (:class:`SqliteUserEmbeddingStore`) or Redis
(:class:`RedisUserEmbeddingStore`), behind the narrow :class:`UserEmbeddingStore` interface. A
write never replaces a newer state with an older one, so replays and racing writers are safe.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kairos.features import AFFINITY_WEIGHTS
from kairos.schema import Event
from kairos.stores.sqlite_conn import thread_connection

#: How much one action says about taste; bookings weigh as purchases.
ENGAGEMENT_WEIGHTS: dict[str, float] = {**AFFINITY_WEIGHTS, "booking": AFFINITY_WEIGHTS["purchase"]}
#: Kinds whose text is the user's own words (query, transcript) rather than an item's.
TEXT_KINDS = ("search", "voice")
DEFAULT_HALF_LIFE_S = 7 * 86400.0


@dataclass(frozen=True)
class EmbeddingState:
    """Decayed weighted sum of the unit vectors a user engaged with, anchored at ``ts``."""

    total: np.ndarray  # float32, shape (dim,)
    weight: float
    ts: float  # epoch seconds: every contribution is decayed to this time
    count: int = 0  # engagements folded in (not decayed): tells a first guess from a settled taste

    def unit(self) -> np.ndarray | None:
        """The direction of the average (unit length), or None when there is none yet."""
        norm = float(np.linalg.norm(self.total))
        if not norm > 1e-12:
            return None
        return (self.total / norm).astype(np.float32)

    def consistency(self) -> float:
        """|mean vector| in [0, 1]: 1 when everything engaged with points the same way."""
        if self.weight <= 0:
            return 0.0
        return float(min(1.0, np.linalg.norm(self.total) / self.weight))


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """``0.5 ** (elapsed / half_life)``; no decay for non-positive elapsed time."""
    if elapsed_s <= 0:
        return 1.0
    return math.pow(0.5, elapsed_s / half_life_s)


def decayed_update(
    state: EmbeddingState | None, vector: np.ndarray, weight: float, ts: float, half_life_s: float
) -> EmbeddingState:
    """``state`` with one more engagement of ``weight`` on ``vector`` at ``ts`` (epoch seconds).

    A newer event moves the anchor forward and decays the old sum; an older (late) event is
    decayed to the anchor. Either way the result equals folding the events in time order.
    """
    unit = _unit(vector)
    if state is None:
        return EmbeddingState(total=(weight * unit).astype(np.float32), weight=weight, ts=ts, count=1)
    if ts >= state.ts:
        keep = decay_factor(ts - state.ts, half_life_s)
        total, total_weight, anchor = state.total * keep + weight * unit, state.weight * keep + weight, ts
    else:
        late = decay_factor(state.ts - ts, half_life_s) * weight
        total, total_weight, anchor = state.total + late * unit, state.weight + late, state.ts
    return EmbeddingState(total=total.astype(np.float32), weight=total_weight, ts=anchor, count=state.count + 1)


def _unit(vector: Any) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    if not math.isfinite(norm) or norm <= 1e-12:
        raise ValueError("vector must be finite and non-zero")
    return array / norm


def engagement_text(event: Event, item_text: Callable[[str], str | None] | None = None) -> tuple[str, float] | None:
    """(text to embed, weight) for a user event that says something about taste, else None.

    Searches and voice queries use their own text; engagements use the item's text (looked up
    with ``item_text``, e.g. from the catalog), falling back to the event's text.
    """
    if event.actor_type != "user" or event.kind not in ENGAGEMENT_WEIGHTS:
        return None
    weight = ENGAGEMENT_WEIGHTS[event.kind]
    if event.kind in TEXT_KINDS:
        text = event.text
    else:
        text = item_text(event.item_id) if (item_text is not None and event.item_id) else None
        text = text or event.text
    if not text or not text.strip():
        return None
    return text.strip(), weight


class UserEmbeddings:
    """Per-user exponentially time-decayed average of engagement embeddings (River style).

    Parameters
    ----------
    half_life_s
        After this much event time an engagement counts half as much as a new one.
    dim
        Vector size (384 for MiniLM); vectors of another size are refused.

    Examples
    --------
    >>> import numpy as np
    >>> users = UserEmbeddings(half_life_s=86400, dim=3)
    >>> users.learn_one("u1", np.array([1.0, 0.0, 0.0]), weight=1.0, ts=0)
    >>> users.learn_one("u1", np.array([0.0, 1.0, 0.0]), weight=1.0, ts=86400)  # a half-life later
    >>> [round(float(x), 3) for x in users.vector("u1")]  # the newer taste counts twice as much
    [0.447, 0.894, 0.0]
    >>> round(users.similarity("u1", np.array([0.0, 1.0, 0.0])), 3)
    0.894
    >>> users.vector("nobody") is None
    True
    """

    def __init__(self, half_life_s: float = DEFAULT_HALF_LIFE_S, dim: int = 384) -> None:
        if not half_life_s > 0:
            raise ValueError(f"half_life_s must be positive, not {half_life_s!r}")
        if dim < 1:
            raise ValueError(f"dim must be positive, not {dim!r}")
        self.half_life_s = float(half_life_s)
        self.dim = int(dim)
        self._states: dict[str, EmbeddingState] = {}
        self._dirty: set[str] = set()

    def __repr__(self) -> str:
        return f"UserEmbeddings(half_life_s={self.half_life_s:g}, dim={self.dim}, users={len(self._states)})"

    def __len__(self) -> int:
        return len(self._states)

    def learn_one(self, user_id: str, vector: Any, weight: float = 1.0, ts: float = 0.0) -> None:
        """Fold one engagement in: ``vector`` (any length-``dim`` embedding) at event time ``ts``."""
        array = np.asarray(vector, dtype=np.float32).reshape(-1)
        if array.shape[0] != self.dim:
            raise ValueError(f"vector has {array.shape[0]} dimensions, expected {self.dim}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be a positive number, not {weight!r}")
        if not (isinstance(ts, (int, float)) and math.isfinite(ts)):
            raise ValueError(f"ts must be finite epoch seconds, not {ts!r}")
        self._states[user_id] = decayed_update(self._states.get(user_id), array, float(weight), float(ts),
                                               self.half_life_s)
        self._dirty.add(user_id)

    def learn_event(
        self,
        event: Event,
        encode: Callable[[Sequence[str]], np.ndarray],
        item_text: Callable[[str], str | None] | None = None,
    ) -> bool:
        """Learn from a canonical event when it says something about taste; True if it did."""
        found = engagement_text(event, item_text)
        if found is None:
            return False
        text, weight = found
        vector = encode([text])[0]
        if not np.any(vector):
            return False
        self.learn_one(event.actor_id, vector, weight, event.ts.timestamp())
        return True

    def vector(self, user_id: str) -> np.ndarray | None:
        """The user's taste as a unit vector, or None for a user with no engagement yet."""
        state = self._states.get(user_id)
        return None if state is None else state.unit()

    def similarity(self, user_id: str, vector: Any) -> float | None:
        """Cosine between the user's taste and ``vector``; None for an unknown user."""
        return cosine(self.vector(user_id), vector)

    def state(self, user_id: str) -> EmbeddingState | None:
        return self._states.get(user_id)

    def set_state(self, user_id: str, state: EmbeddingState) -> None:
        """Adopt a stored state (e.g. read back from a :class:`UserEmbeddingStore` on start)."""
        self._states[user_id] = state

    def users(self) -> list[str]:
        return sorted(self._states)

    def pop_dirty(self) -> dict[str, EmbeddingState]:
        """States changed since the last call: what a sink writes to the store."""
        dirty = {user_id: self._states[user_id] for user_id in sorted(self._dirty)}
        self._dirty.clear()
        return dirty


def cosine(a: np.ndarray | None, b: Any) -> float | None:
    """Cosine similarity, or None when either side is missing or zero."""
    if a is None or b is None:
        return None
    u = np.asarray(a, dtype=np.float32).reshape(-1)
    v = np.asarray(b, dtype=np.float32).reshape(-1)
    if u.shape != v.shape:
        raise ValueError(f"vectors of different sizes: {u.shape[0]} and {v.shape[0]}")
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu <= 1e-12 or nv <= 1e-12:
        return None
    return float(np.dot(u, v) / (nu * nv))


# ------------------------------------------------------------------------------------------ stores


class UserEmbeddingStore(Protocol):
    """Where user embedding states are kept beside the features."""

    def write_batch(self, states: Mapping[str, EmbeddingState]) -> None:
        """Upsert states; an older state (earlier ``ts``, then fewer ``count``) never wins."""
        ...

    def read(self, user_ids: Sequence[str]) -> list[EmbeddingState | None]:
        """States for the ids, None where the store holds none."""
        ...

    def close(self) -> None: ...


def read_one(store: UserEmbeddingStore, user_id: str) -> EmbeddingState | None:
    return store.read([user_id])[0]


def _to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def _from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


class SqliteUserEmbeddingStore:
    """User embeddings in one SQLite file (the ``local`` profile).

    >>> import tempfile, pathlib, numpy as np
    >>> store = SqliteUserEmbeddingStore(pathlib.Path(tempfile.mkdtemp()) / "emb.sqlite")
    >>> store.write_batch({"u1": EmbeddingState(np.array([0.6, 0.8], dtype=np.float32), 1.0, 10.0, 1)})
    >>> [round(float(x), 1) for x in store.read(["u1", "u2"])[0].total], store.read(["u2"])
    ([0.6, 0.8], [None])
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS user_embeddings (user_id TEXT PRIMARY KEY, dim INTEGER NOT NULL,"
            " total BLOB NOT NULL, weight REAL NOT NULL, ts REAL NOT NULL, count INTEGER NOT NULL)"
        )

    def _conn(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path)

    def write_batch(self, states: Mapping[str, EmbeddingState]) -> None:
        rows = [
            (user_id, int(s.total.shape[0]), _to_blob(s.total), float(s.weight), float(s.ts), int(s.count))
            for user_id, s in states.items()
        ]
        if not rows:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO user_embeddings (user_id, dim, total, weight, ts, count) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(user_id) DO UPDATE SET dim=excluded.dim, total=excluded.total,"
                " weight=excluded.weight, ts=excluded.ts, count=excluded.count"
                " WHERE excluded.ts > user_embeddings.ts"
                " OR (excluded.ts = user_embeddings.ts AND excluded.count >= user_embeddings.count)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def read(self, user_ids: Sequence[str]) -> list[EmbeddingState | None]:
        ids = list(user_ids)
        found: dict[str, EmbeddingState] = {}
        for start in range(0, len(ids), 500):  # SQLite caps the number of bound parameters
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for user_id, _dim, blob, weight, ts, count in self._conn().execute(
                f"SELECT user_id, dim, total, weight, ts, count FROM user_embeddings WHERE user_id IN ({marks})",
                chunk,
            ):
                found[user_id] = EmbeddingState(_from_blob(blob), float(weight), float(ts), int(count))
        return [found.get(user_id) for user_id in ids]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# Compare-and-set in one round trip, like the Redis catalog: an older state never overwrites a newer.
_WRITE_LUA = """
local ts = redis.call('HGET', KEYS[1], 'ts')
if ts then
  local newer = tonumber(ARGV[2]) > tonumber(ts)
  local same = tonumber(ARGV[2]) == tonumber(ts)
  if not newer and not (same and tonumber(ARGV[3]) >= tonumber(redis.call('HGET', KEYS[1], 'count'))) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'ts', ARGV[2], 'count', ARGV[3], 'weight', ARGV[4])
return 1
"""


class RedisUserEmbeddingStore:
    """User embeddings on Redis (the ``redis`` profile): one hash per user under ``prefix``."""

    def __init__(self, client: Any, prefix: str = "kairos:user_embeddings") -> None:
        self.client = client
        self.prefix = prefix
        self._write = client.register_script(_WRITE_LUA)

    def key(self, user_id: str) -> str:
        return f"{self.prefix}:{user_id}"

    def write_batch(self, states: Mapping[str, EmbeddingState]) -> None:
        if not states:
            return
        pipe = self.client.pipeline(transaction=False)
        for user_id, s in states.items():
            self._write(
                keys=[self.key(user_id)],
                args=[_to_blob(s.total), repr(float(s.ts)), int(s.count), repr(float(s.weight))],
                client=pipe,
            )
        pipe.execute()

    def read(self, user_ids: Sequence[str]) -> list[EmbeddingState | None]:
        ids = list(user_ids)
        if not ids:
            return []
        from kairos.stores.redis_conn import hmget_many

        out: list[EmbeddingState | None] = []
        replies = hmget_many(self.client, [self.key(user_id) for user_id in ids], ("total", "weight", "ts", "count"))
        for total, weight, ts, count in replies:
            if total is None:
                out.append(None)
            else:
                out.append(EmbeddingState(_from_blob(total), float(weight), float(ts), int(count)))
        return out

    def close(self) -> None:
        self.client.close()


def open_user_embedding_store(settings: Any) -> SqliteUserEmbeddingStore | RedisUserEmbeddingStore:
    """The configured store: SQLite under ``KAIROS_HOME`` or Redis for the ``redis`` profile."""
    if settings.profile == "redis":
        from kairos.stores.redis_conn import redis_client

        return RedisUserEmbeddingStore(
            redis_client(settings.redis_url), prefix=f"kairos:{settings.feast_project}:user_embeddings"
        )
    return SqliteUserEmbeddingStore(Path(settings.home) / "user_embeddings.sqlite")


def learn_events(
    embeddings: UserEmbeddings,
    events: Iterable[Event],
    encode: Callable[[Sequence[str]], np.ndarray],
    item_text: Callable[[str], str | None] | None = None,
) -> int:
    """Fold a batch of events in, encoding all their texts in one call; returns how many counted."""
    found = [(event, engagement_text(event, item_text)) for event in events]
    useful = [(event, hit) for event, hit in found if hit is not None]
    if not useful:
        return 0
    vectors = encode([hit[0] for _, hit in useful])
    learned = 0
    for (event, (_, weight)), vector in zip(useful, vectors, strict=True):
        if np.any(vector):
            embeddings.learn_one(event.actor_id, vector, weight, event.ts.timestamp())
            learned += 1
    return learned


__all__ = [
    "ENGAGEMENT_WEIGHTS",
    "EmbeddingState",
    "RedisUserEmbeddingStore",
    "SqliteUserEmbeddingStore",
    "UserEmbeddingStore",
    "UserEmbeddings",
    "cosine",
    "decay_factor",
    "decayed_update",
    "engagement_text",
    "learn_events",
    "open_user_embedding_store",
    "read_one",
]
