"""Versioned model state: the flow publishes learned models, the API swaps them in without a restart.

A :class:`ModelStateStore` keeps numbered versions of named objects (``publish`` writes version
``n + 1`` atomically: a reader sees the old version or the new one, never half of one). Like the
event store and Feast's online stores, the interface is narrow and chosen by configuration:

* :class:`FileModelStateStore` (profile ``local``): one directory per name under
  ``$KAIROS_HOME/models``; a version is written to a temporary file and renamed into place, then
  the ``LATEST`` pointer is replaced the same way;
* :class:`RedisModelStateStore` (profile ``redis``): versions under a key prefix; the version
  number comes from ``INCR`` and ``latest`` only ever moves forward (a Lua script), so concurrent
  publishers cannot move it back.

:class:`ModelWatcher` runs in the API: a daemon thread polls the version number (one small read)
every ``interval_s`` and, when it changed, loads the new object and replaces its reference in one
assignment. Requests call ``current()``, which never waits for I/O, so a slow store delays fresh
models, never requests; staleness is bounded by the publisher's interval plus the poll interval.

Objects are pickled: the store is internal (the flow writes, the API reads); never point it at
data that others can write.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: Names become file and key names: keep them plain.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LATEST = "LATEST"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in (".", ".."):
        raise ValueError(f"model name must match {NAME_PATTERN.pattern}, not {name!r}")
    return name


class ModelStateStore(Protocol):
    """Where learned models are published and read back, by name and version."""

    def publish(self, name: str, obj: Any) -> int:
        """Store ``obj`` as the next version of ``name``; returns its version number."""
        ...

    def latest_version(self, name: str) -> int | None:
        """The newest version of ``name`` (cheap: this is what watchers poll), or None."""
        ...

    def load(self, name: str, version: int | None = None) -> tuple[int, Any] | None:
        """``(version, object)`` of a version (default the newest), or None when there is none."""
        ...

    def versions(self, name: str) -> list[int]:
        """The versions still kept, oldest first."""
        ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------- files


class FileModelStateStore:
    """Versions as files: ``root/<name>/v0000000012.pkl`` plus a ``LATEST`` pointer.

    >>> import tempfile, pathlib
    >>> store = FileModelStateStore(pathlib.Path(tempfile.mkdtemp()))
    >>> store.publish("demo", {"w": 1}), store.publish("demo", {"w": 2})
    (1, 2)
    >>> store.load("demo")
    (2, {'w': 2})
    >>> store.load("demo", 1)
    (1, {'w': 1})
    """

    def __init__(self, root: Path | str, retain: int = 5) -> None:
        if retain < 1:
            raise ValueError(f"retain must be at least 1, not {retain!r}")
        self.root = Path(root)
        self.retain = retain

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    @staticmethod
    def _file(folder: Path, version: int) -> Path:
        return folder / f"v{version:010d}.pkl"

    @contextlib.contextmanager
    def _locked(self, folder: Path) -> Iterator[None]:
        # Publishers in several processes (flow workers, a fine-tuning job) take turns.
        with open(folder / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish(self, name: str, obj: Any) -> int:
        folder = self._dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        with self._locked(folder):
            existing = self.versions(name)
            version = max([self.latest_version(name) or 0, *existing]) + 1
            _atomic_write(self._file(folder, version), data)
            _atomic_write(folder / _LATEST, str(version).encode())
            for old in existing[: max(0, len(existing) + 1 - self.retain)]:
                with contextlib.suppress(FileNotFoundError):
                    self._file(folder, old).unlink()
        return version

    def latest_version(self, name: str) -> int | None:
        try:
            text = (self._dir(name) / _LATEST).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def load(self, name: str, version: int | None = None) -> tuple[int, Any] | None:
        folder = self._dir(name)
        for _attempt in range(3):
            wanted = self.latest_version(name) if version is None else version
            if wanted is None:
                return None
            try:
                data = self._file(folder, wanted).read_bytes()
            except FileNotFoundError:
                if version is not None:
                    return None
                continue  # pruned between reading LATEST and the file: read LATEST again
            return wanted, pickle.loads(data)
        return None

    def versions(self, name: str) -> list[int]:
        folder = self._dir(name)
        if not folder.exists():
            return []
        found = []
        for path in folder.glob("v*.pkl"):
            digits = path.stem[1:]
            if digits.isdigit():
                found.append(int(digits))
        return sorted(found)

    def close(self) -> None:
        pass


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------- redis

_ADVANCE_LATEST = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


class RedisModelStateStore:
    """Versions in Redis under ``<prefix>{<name>}:…`` (the braces keep a name's keys in one
    Redis Cluster slot): ``seq`` (counter), ``latest``, ``versions`` (sorted set), ``v:<n>``."""

    def __init__(self, client: Any, prefix: str = "kairos:models:", retain: int = 5) -> None:
        if retain < 1:
            raise ValueError(f"retain must be at least 1, not {retain!r}")
        self.client = client
        self.prefix = prefix
        self.retain = retain
        self._advance = client.register_script(_ADVANCE_LATEST)

    def _key(self, name: str, suffix: str) -> str:
        return f"{self.prefix}{{{check_name(name)}}}:{suffix}"

    def publish(self, name: str, obj: Any) -> int:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        version = int(self.client.incr(self._key(name, "seq")))
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._key(name, f"v:{version}"), data)
        pipe.zadd(self._key(name, "versions"), {str(version): version})
        self._advance(keys=[self._key(name, "latest")], args=[version], client=pipe)
        pipe.execute()
        self._prune(name)
        return version

    def _prune(self, name: str) -> None:
        old = self.client.zrange(self._key(name, "versions"), 0, -(self.retain + 1))
        if old:
            pipe = self.client.pipeline(transaction=True)
            for member in old:
                pipe.delete(self._key(name, f"v:{int(member)}"))
            pipe.zrem(self._key(name, "versions"), *old)
            pipe.execute()

    def latest_version(self, name: str) -> int | None:
        value = self.client.get(self._key(name, "latest"))
        return int(value) if value is not None else None

    def load(self, name: str, version: int | None = None) -> tuple[int, Any] | None:
        for _attempt in range(3):
            wanted = self.latest_version(name) if version is None else version
            if wanted is None:
                return None
            data = self.client.get(self._key(name, f"v:{wanted}"))
            if data is None:
                if version is not None:
                    return None
                continue
            return wanted, pickle.loads(data)
        return None

    def versions(self, name: str) -> list[int]:
        return sorted(int(m) for m in self.client.zrange(self._key(name, "versions"), 0, -1))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def redis_client(url: str, db: int | None = None) -> Any:
    """A Redis client from Feast's connection syntax ``host:port[,db=N][,password=…][,ssl=true]``."""
    import redis

    head, *options = [part.strip() for part in url.split(",") if part.strip()]
    host, _, port = head.rpartition(":") if ":" in head else (head, "", "6379")
    kwargs: dict[str, Any] = {"host": host or "127.0.0.1", "port": int(port or 6379)}
    for option in options:
        key, _, value = option.partition("=")
        key = key.strip().lower()
        if key == "db":
            kwargs["db"] = int(value)
        elif key == "password":
            kwargs["password"] = value
        elif key == "ssl":
            kwargs["ssl"] = value.strip().lower() in ("1", "true", "yes")
        elif key == "username":
            kwargs["username"] = value
    if db is not None:
        kwargs["db"] = db
    return redis.Redis(**kwargs)


def open_model_state(settings: Any) -> ModelStateStore:
    """The configured store: files under ``$KAIROS_HOME/models``, or Redis for the redis profile."""
    if getattr(settings, "profile", "local") == "redis":
        prefix = f"{getattr(settings, 'feast_project', 'kairos')}:models:"
        return RedisModelStateStore(redis_client(settings.redis_url), prefix=prefix)
    return FileModelStateStore(Path(settings.home) / "models")


# ------------------------------------------------------------------------------------ publishing


class ModelPublisher:
    """Learner side: publish a model at most every ``interval_s`` seconds, and only when it changed.

    >>> import tempfile, pathlib
    >>> store = FileModelStateStore(pathlib.Path(tempfile.mkdtemp()))
    >>> publisher = ModelPublisher(store, "demo", interval_s=60)
    >>> publisher.changed(); publisher.maybe_publish({"w": 1})  # the first change goes out at once
    1
    >>> publisher.changed(); publisher.maybe_publish({"w": 2}) is None  # within the interval: waits
    True
    >>> publisher.flush({"w": 2})
    2
    """

    def __init__(self, store: ModelStateStore, name: str, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.name = store, check_name(name)
        self.interval_s = interval_s
        self.clock = clock
        self.dirty = False
        self.last_publish = -float("inf")
        self.version: int | None = None

    def changed(self) -> None:
        self.dirty = True

    def maybe_publish(self, model: Any) -> int | None:
        if not self.dirty or self.clock() - self.last_publish < self.interval_s:
            return None
        return self.flush(model)

    def flush(self, model: Any) -> int | None:
        """Publish now if anything changed since the last publish."""
        if not self.dirty:
            return None
        self.version = self.store.publish(self.name, model)
        self.last_publish = self.clock()
        self.dirty = False
        return self.version


# -------------------------------------------------------------------------------------- watching


class ModelWatcher:
    """Serving side: the newest published version of one model, swapped in by a background thread.

    ``current()`` returns the model in memory (``default`` until one is published) and never
    touches the store. The thread polls ``latest_version`` every ``interval_s``; on a newer version
    it loads it (requests keep using the old one meanwhile), passes it through ``prepare`` (e.g. to
    warm caches), then swaps one reference. A failing store is logged and retried; the last good
    model stays in service.
    """

    def __init__(
        self,
        store: ModelStateStore,
        name: str,
        interval_s: float = 0.5,
        default: Any = None,
        prepare: Callable[[Any], Any] | None = None,
        start: bool = True,
    ) -> None:
        if not 0 < interval_s <= 1.0:
            raise ValueError(f"interval_s must be in (0, 1] to keep staleness bounded, not {interval_s!r}")
        self.store, self.name = store, check_name(name)
        self.interval_s = interval_s
        self.prepare = prepare
        # (version, model, monotonic time loaded): one tuple, replaced whole, so readers never see
        # a version paired with the wrong model.
        self._state: tuple[int | None, Any, float] = (None, default, time.monotonic())
        self._checked_at = time.monotonic()
        self.last_error: str | None = None
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- reading (request path) --------------------------------------------------------------

    def current(self) -> Any:
        return self._state[1]

    @property
    def version(self) -> int | None:
        return self._state[0]

    def staleness_s(self) -> float:
        """Seconds since the store was last checked successfully (what "fresh" can promise)."""
        return time.monotonic() - self._checked_at

    # -- polling -----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Check the store once; True when a newer version was swapped in."""
        try:
            latest = self.store.latest_version(self.name)
            swapped = False
            if latest is not None and (self.version is None or latest > self.version):
                loaded = self.store.load(self.name, None)
                if loaded is not None and (self.version is None or loaded[0] > self.version):
                    version, model = loaded
                    if self.prepare is not None:
                        model = self.prepare(model)
                    self._state = (version, model, time.monotonic())
                    self.swaps += 1
                    swapped = True
            self._checked_at = time.monotonic()
            self.last_error = None
            return swapped
        except Exception as exc:  # noqa: BLE001 - the API must keep serving the model it has
            if self.last_error is None:
                log.warning("model %r: cannot refresh from the store: %s", self.name, exc, exc_info=True)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    def start(self) -> ModelWatcher:
        if self._thread is not None:
            return self
        self.refresh()  # serve the newest model from the first request on
        self._thread = threading.Thread(target=self._run, name=f"model-watcher-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def wait_for(self, version: int, timeout_s: float = 5.0) -> bool:
        """Block until ``version`` (or newer) is in service; for tests and scripts, not requests."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.version is not None and self.version >= version:
                return True
            time.sleep(0.01)
        return self.version is not None and self.version >= version

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s + 1)
            self._thread = None


def prepare_bandit(model: Any) -> Any:
    """Warm a bandit's posterior factor before it serves, so the first request does not pay for it."""
    prepare = getattr(getattr(model, "model", None), "prepare", None)
    if callable(prepare):
        prepare()
    return model


__all__ = [
    "ModelStateStore",
    "FileModelStateStore",
    "RedisModelStateStore",
    "ModelPublisher",
    "ModelWatcher",
    "open_model_state",
    "redis_client",
    "prepare_bandit",
    "check_name",
]
