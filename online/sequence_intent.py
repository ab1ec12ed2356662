"""Serving the promoted next-category GRU beside the online next-intent model.

``kairos train run`` trains :class:`offline.sequence_model.SequenceModel` (a small GRU of the next
engaged category from the last ``max_len`` engaged categories and the UTC hour), gates it, and
promotes it in the model registry (``models/next_category/CURRENT.json``). This module serves it:

* :class:`SequenceIntent` looks at the pointer at most every ``check_interval_s`` (a ``stat``; the
  JSON is read only when the file changed). A new version loads in a background thread while the
  old one keeps answering, then one reference assignment swaps them. A rollback to "nothing
  promoted" is instant; a version that fails to load is logged and skipped until the pointer moves.
* :class:`EngagementHistory` is the GRU's input at serving time: each user's engaged categories
  (``view``/``click``/``save``/``purchase``/``booking``, :data:`offline.training_sets.HISTORY_KINDS`)
  read from the same offline event log the GRU was trained on, tailed by a background thread
  (new Parquet part files only; stale by at most the flow's offline flush plus the refresh period).
  The online intent model's own per-user history is not used: it mixes searches and check-ins into
  the sequence, which the GRU never saw in training.
* :func:`pool` combines the two models: a linear pool ``w·p_gru + (1-w)·p_river`` for users with at
  least ``min_history`` engaged categories before the moment asked about, the online model alone
  otherwise. A linear pool never scores worse (in log-loss) than the average of its two members,
  needs no calibration data, and keeps the online model's knowledge of the hour, the place and
  travelling, which the GRU does not see.

Nothing promoted: :meth:`SequenceIntent.predict` returns None and the online model decides alone,
exactly as before. Inference is one sequence through the GRU with torch on one intra-op thread
(process-wide: a 20-step GRU runs faster without a thread pool; measured in the tests' latency check).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairos.registry import ModelRegistry
from online.promotion import PromotedVersionWatcher

log = logging.getLogger(__name__)

#: The registry name ``kairos train run`` publishes the GRU under (offline.training.SEQUENCE_MODEL).
SEQUENCE_MODEL = "next_category"
#: Engagement kinds whose category forms the GRU's sequence; the same as the training set's
#: (``offline.training_sets.HISTORY_KINDS``, checked by a test; not imported: that pulls pandas).
HISTORY_KINDS = ("view", "click", "save", "purchase", "booking")
#: Categories kept per user: more than any GRU's ``max_len`` so far (20), and bounded.
KEEP_PER_USER = 64


class EngagementHistory:
    """Per-user engaged categories from the offline event log, oldest first, kept current.

    ``refresh`` reads the part files it has not read yet (part files are immutable and appear by
    rename, so a file is read once and whole). Writes are at-least-once, so an event seen twice
    (same ``event_id``) counts once.
    """

    def __init__(self, events_dir: Path | str, keep: int = KEEP_PER_USER) -> None:
        self.events_dir = Path(events_dir)
        self.keep = keep
        self._lock = threading.Lock()
        self._users: dict[str, list[tuple[float, str, str]]] = {}  # (ts, event_id, category), sorted
        self._read: set[str] = set()
        self.events = 0

    def refresh(self) -> int:
        """Fold in new part files; returns how many events were added."""
        import pyarrow.parquet as pq

        if not self.events_dir.exists():
            return 0
        new = sorted(p for p in self.events_dir.glob("part-*.parquet") if p.name not in self._read)
        added = 0
        for path in new:
            try:
                table = pq.read_table(path, columns=["event_id", "ts", "actor_type", "actor_id", "kind", "category"],
                                      filters=[("actor_type", "=", "user"), ("kind", "in", list(HISTORY_KINDS))])
            except FileNotFoundError:  # removed meanwhile (a test cleaning up): nothing to read
                self._read.add(path.name)
                continue
            rows = table.to_pydict()
            stamps = table.column("ts").cast("int64").to_pylist()  # microseconds since the epoch
            with self._lock:
                for event_id, micros, user, category in zip(rows["event_id"], stamps, rows["actor_id"],
                                                            rows["category"], strict=True):
                    if category and user and micros is not None:
                        added += self._add(user, micros / 1e6, event_id or "", category)
            self._read.add(path.name)
        self.events += added
        return added

    def _add(self, user: str, ts: float, event_id: str, category: str) -> int:
        seq = self._users.setdefault(user, [])
        entry = (ts, event_id, category)
        at = bisect.bisect_left(seq, entry)
        if at < len(seq) and seq[at] == entry:
            return 0  # the same event written twice
        seq.insert(at, entry)
        if len(seq) > self.keep:
            del seq[0]
        return 1

    def before(self, user_id: str, ts: float, n: int) -> list[str]:
        """The user's last ``n`` engaged categories strictly before ``ts``, oldest first."""
        with self._lock:
            seq = self._users.get(user_id)
            if not seq:
                return []
            end = bisect.bisect_left(seq, (ts,))
            return [c for _, _, c in seq[max(0, end - n):end]]

    def add(self, user_id: str, ts: float, category: str, event_id: str = "") -> None:
        """Record one engagement directly (tests, embedders without an offline log)."""
        with self._lock:
            self._add(user_id, ts, event_id, category)


@dataclass(frozen=True)
class LoadedSequenceModel:
    version: str
    model: Any  # offline.sequence_model.SequenceModel

    def predict(self, history: list[str], ts: float) -> dict[str, float]:
        from offline.sequence_model import Example

        # The training examples' hour is the UTC hour of the event (examples_from_timeline).
        hour = int((ts // 3600) % 24)
        scores = self.model.scores([Example(history, hour, "")])[0]
        return {c: float(p) for c, p in zip(self.model.categories, scores, strict=True)}


class SequenceIntent:
    """The promoted next-category GRU, followed through promotions and rollbacks without restart."""

    def __init__(
        self,
        registry_root: Path | str,
        history: EngagementHistory,
        check_interval_s: float = 5.0,
        history_refresh_s: float = 2.0,
        min_history: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = ModelRegistry(registry_root)
        self.history = history
        self.check_interval_s = float(check_interval_s)
        self.history_refresh_s = float(history_refresh_s)
        self.min_history = max(1, int(min_history))
        self.clock = clock
        self._active: LoadedSequenceModel | None = None
        self._stop = threading.Event()
        self._tailer: threading.Thread | None = None
        # "Nothing promoted" applies at once (unload); a version the pointer left while it loaded
        # is not installed.
        self._watcher = PromotedVersionWatcher(
            self.registry, SEQUENCE_MODEL, load=self._load, install=self._install, serving=lambda: self.version,
            unload=self._unload, drop_superseded=True, check_interval_s=self.check_interval_s, clock=clock,
            label="sequence intent", logger=log)

    @classmethod
    def from_settings(cls, settings: Any) -> SequenceIntent:
        from kairos.stores.offline_log import OfflineLog

        return cls(Path(settings.home) / "models", EngagementHistory(OfflineLog(settings.offline_dir).events_dir),
                   check_interval_s=settings.sequence_model_check_s,
                   history_refresh_s=settings.sequence_history_refresh_s, min_history=settings.sequence_min_history)

    @property
    def swaps(self) -> int:
        """Swaps done so far (tests)."""
        return self._watcher.swaps

    @property
    def version(self) -> str | None:
        """The registry version serving now (None: nothing promoted, or not loaded yet)."""
        active = self._active
        return active.version if active is not None else None

    # -- serving -----------------------------------------------------------------------------------

    def predict(self, user_id: str, ts: float) -> tuple[str, dict[str, float]] | None:
        """``(version, category probabilities)`` from the promoted GRU, or None when nothing is
        promoted or the user has fewer than ``min_history`` engaged categories before ``ts``."""
        self.maybe_check()
        active = self._active  # pinned: a swap during this call does not change what answers it
        if active is None:
            return None
        history = self.history.before(user_id, ts, active.model.config.max_len)
        if len(history) < self.min_history:
            return None
        return active.version, active.predict(history, ts)

    # -- following the registry --------------------------------------------------------------------

    def maybe_check(self) -> None:
        """Look at the registry when ``check_interval_s`` has passed since the last look."""
        self._watcher.maybe_check()

    def check(self, wait: bool = False) -> bool:
        """Start loading the promoted version if it is not the one serving; True if a load started."""
        return self._watcher.check(wait)

    def wait_for_load(self, timeout: float | None = None) -> None:
        self._watcher.wait_for_load(timeout)

    def _load(self, version: str | None) -> Any:
        """The GRU of a registry version (on the watcher's background thread)."""
        assert version is not None  # "nothing promoted" is an unload, never loaded
        import torch

        from offline.sequence_model import SequenceModel

        # One short sequence per request: a thread pool costs more than it saves.
        torch.set_num_threads(1)
        model = SequenceModel.load(self.registry.path(SEQUENCE_MODEL, version))
        self._start_tailer()
        return model

    def _install(self, version: str | None, model: Any) -> None:
        assert version is not None
        self._active = LoadedSequenceModel(version, model)

    def _unload(self) -> None:
        self._active = None  # the online model decides alone

    # -- the history tailer ------------------------------------------------------------------------

    def _start_tailer(self) -> None:
        """Read the history once (before the first version serves), then tail it in the background.
        Started only when a GRU is promoted: without one the history is not needed."""
        if self._tailer is not None:
            return
        self._refresh()
        self._tailer = threading.Thread(target=self._tail, name="sequence-intent-history", daemon=True)
        self._tailer.start()

    def _refresh(self) -> None:
        try:
            self.history.refresh()
        except Exception:  # a bad part file must not stop serving: the history just stays older
            log.warning("sequence intent: reading the offline event log failed", exc_info=True)

    def _tail(self) -> None:
        while not self._stop.wait(self.history_refresh_s):
            self._refresh()

    def close(self) -> None:
        self._stop.set()


def pool(river: Mapping[str, float], gru: Mapping[str, float] | None, weight: float) -> dict[str, float]:
    """Linear pool ``weight·gru + (1-weight)·river`` over the union of their categories.

    Either side missing or empty: the other one alone (renormalised, so the result sums to 1).
    """
    weight = min(1.0, max(0.0, weight))
    if not gru or weight == 0.0:
        return dict(river)
    if not river or weight == 1.0:
        return dict(gru)
    out = {c: (1.0 - weight) * p for c, p in river.items()}
    for c, p in gru.items():
        out[c] = out.get(c, 0.0) + weight * p
    total = sum(out.values())
    return {c: p / total for c, p in out.items()} if total > 0 else out


__all__ = ["HISTORY_KINDS", "SEQUENCE_MODEL", "EngagementHistory", "LoadedSequenceModel", "SequenceIntent", "pool"]
