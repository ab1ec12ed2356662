"""Following a model's promoted version in the registry: check the pointer, load in the background, swap.

Serving components that answer with a registry model (the text encoder, the next-category GRU)
share one way of following promotions and rollbacks without a restart, and this module is it:

* :meth:`PromotedVersionWatcher.maybe_check` looks at the pointer (``<model>/CURRENT.json``) at
  most every ``check_interval_s`` seconds, on the calling thread. The look is a ``stat``; the JSON
  is read only when the file's stamp (inode, mtime, size) changed, so the common case costs one
  system call.
* When the wanted version differs from the one serving, it loads in a background thread (one at a
  time, under a lock) while the old model keeps answering; the component's ``install`` then makes
  it serve with one reference assignment. Nobody waits and no call fails because of a swap.
* A version that fails to load is logged and skipped until the pointer changes again (a new
  promotion deserves a new try; retrying a broken artefact every few seconds does not help).
* "Nothing promoted" (no pointer, or ``version: null``) is either loaded like any version (the
  text encoder hands back its in-memory base model) or, with ``unload``, applied at once on the
  calling thread (the sequence intent just stops answering).

Each component supplies only how to load a version (``load``, may be slow, may raise) and how to
put a loaded one in service (``install``); what serves now is read back through ``serving``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kairos.registry import ModelRegistry

_log = logging.getLogger(__name__)

#: A pointer file's identity: (inode, mtime in ns, size). A replaced pointer gets a new inode.
Stamp = tuple[int, int, int]


class PromotedVersionWatcher:
    """Keeps a component on the promoted version of ``model_name`` in ``registry``.

    Parameters
    ----------
    registry, model_name
        Where the pointer is.
    load
        ``load(version)`` returns the loaded model for a registry version (or, with ``version``
        None and no ``unload``, the component's base model). Runs on the background thread.
    install
        ``install(version, loaded)`` puts a loaded model in service (one reference assignment).
    serving
        The version serving now (None: the base model, or nothing).
    unload
        If given, a pointer to "nothing promoted" calls it at once on the checking thread instead
        of loading None in the background.
    drop_superseded
        Do not install a version the pointer moved away from while it loaded (the next check
        loads the one wanted now). False installs it anyway, and the next check moves on.
    check_interval_s, clock
        :meth:`maybe_check` looks at the pointer at most this often by this clock.
    label, logger
        How log lines name the component, and where they go.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        model_name: str,
        load: Callable[[str | None], Any],
        install: Callable[[str | None, Any], None],
        serving: Callable[[], str | None],
        unload: Callable[[], None] | None = None,
        drop_superseded: bool = True,
        check_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        label: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        self._load_version = load
        self._install = install
        self._serving = serving
        self._unload = unload
        self.drop_superseded = drop_superseded
        self.check_interval_s = float(check_interval_s)
        self.clock = clock
        self.label = label or model_name
        self.log = logger or _log
        self._lock = threading.Lock()
        self._loading: str | None = None  # the version a background thread is loading ("" = None)
        self._failed: str | None = None  # the version that failed to load ("" = None), until the pointer moves
        self._last_check: float | None = None
        self._pointer_stamp: Stamp | None = None
        self._wanted: str | None = None
        self._loader: threading.Thread | None = None
        #: Swaps done so far (tests and metrics): installs plus instant unloads.
        self.swaps = 0

    @property
    def wanted(self) -> str | None:
        """The promoted version as of the last check (None: nothing promoted)."""
        return self._wanted

    @property
    def loading(self) -> bool:
        """Whether a background load is running."""
        return self._loading is not None

    def maybe_check(self) -> None:
        """:meth:`check` when ``check_interval_s`` has passed since the last look; never raises."""
        now = self.clock()
        if self._last_check is not None and now - self._last_check < self.check_interval_s:
            return
        self._last_check = now
        try:
            self.check()
        except Exception:  # a registry hiccup must never fail the request that happened to look
            self.log.warning("%s: reading the model registry failed", self.label, exc_info=True)

    def check(self, wait: bool = False) -> bool:
        """Start loading the promoted version if it is not the one serving; True if a load started
        (and, with ``wait``, finished)."""
        stamp = self._stamp()
        if stamp != self._pointer_stamp:  # the pointer changed (or appeared, or went): read it
            self._wanted = self.registry.current(self.model_name) if stamp is not None else None
            self._pointer_stamp = stamp
            self._failed = None  # a new promotion deserves a new try
        wanted = self._wanted
        if wanted == self._serving():
            return False
        if wanted is None and self._unload is not None:
            self._unload()  # rolled back to "nothing promoted": instant, nothing to load
            self.swaps += 1
            self.log.info("%s: nothing promoted for %s", self.label, self.model_name)
            return False
        key = wanted or ""
        with self._lock:
            if self._loading is not None or self._failed == key:
                return False
            self._loading = key
            loader = threading.Thread(target=self._load, args=(wanted,),
                                      name=f"{self.label.replace(' ', '-')}-load", daemon=True)
            self._loader = loader
            loader.start()
        if wait:
            loader.join()
        return True

    def wait_for_load(self, timeout: float | None = None) -> None:
        """Block until a background load (if any) is done (tests, CLI)."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout)

    def _stamp(self) -> Stamp | None:
        try:
            st = self.registry.pointer_path(self.model_name).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, version: str | None) -> None:
        try:
            loaded = self._load_version(version)
            if self.drop_superseded and self._wanted != version:  # rolled back or moved on meanwhile
                return
            # One reference assignment in the component: a call that already took the old model
            # finishes with it.
            self._install(version, loaded)
            self.swaps += 1
            self.log.info("%s: now serving %s %s", self.label, self.model_name, version or "(the base model)")
        except Exception:
            self.log.exception("%s: loading %s %s failed; the old model keeps serving", self.label, self.model_name,
                               version or "(the base model)")
            self._failed = version or ""
        finally:
            with self._lock:
                self._loading = None


__all__ = ["PromotedVersionWatcher", "Stamp"]
