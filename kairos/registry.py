"""Model registry: versioned artefacts on disk and an atomically swapped "promoted" pointer.

Layout under ``<KAIROS_HOME>/models``::

    <model>/v0001/            the artefact (any files) + metadata.json
    <model>/v0002/ ...
    <model>/CURRENT.json      {"version": "v0002", "history": ["v0001"], "promoted_at": ...}

A version directory appears whole: it is written under a hidden staging name and renamed into
place (a rename of a directory onto a free name is atomic on POSIX). The pointer is a small JSON
file written to a temporary name and ``os.replace``d, so a reader (the API's encoder polling for
new versions, another process) sees either the old pointer or the new one, never half of one.
``version: null`` means "no promoted version": consumers use their built-in base model.

``history`` is the stack of previously promoted versions; :meth:`ModelRegistry.rollback` pops it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POINTER = "CURRENT.json"
METADATA = "metadata.json"
_VERSION = re.compile(r"^v(\d{4,})$")
_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")


def code_version() -> str:
    """The git commit of the checkout this runs from, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5,
                             check=True).stdout.strip()
        if re.fullmatch(r"[0-9a-f]{40}", sha):
            return f"git:{sha}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"kairos=={version('kairos')}"
    except Exception:  # not installed as a package either: still say something honest
        return "unknown"


@dataclass(frozen=True)
class Pointer:
    """The promoted version of a model (None: the base model) and the versions promoted before."""

    version: str | None
    history: tuple[str, ...] = ()
    promoted_at: float | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "history": list(self.history), "promoted_at": self.promoted_at,
                "reason": self.reason}


class RegistryError(ValueError):
    """Unknown model or version, or an operation that cannot apply (nothing to roll back to)."""


class ModelRegistry:
    """Versions of named models under one root folder.

    >>> import tempfile
    >>> reg = ModelRegistry(tempfile.mkdtemp())
    >>> staging = reg.staging("demo"); _ = (staging / "weights.txt").write_text("w")
    >>> v1 = reg.publish("demo", staging, {"metrics": {"acc": 0.5}})
    >>> reg.promote("demo", v1).version, reg.current("demo")
    ('v0001', 'v0001')
    >>> reg.rollback("demo").version is None
    True
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: Any) -> ModelRegistry:
        return cls(Path(settings.home) / "models")

    # -- paths -------------------------------------------------------------------------------------

    def model_dir(self, model: str) -> Path:
        if not _NAME.match(model):
            raise RegistryError(f"bad model name {model!r}: lower-case letters, digits, '_' and '-'")
        return self.root / model

    def path(self, model: str, version: str) -> Path:
        if not _VERSION.match(version or ""):
            raise RegistryError(f"bad version {version!r}: expected v0001, v0002, ...")
        return self.model_dir(model) / version

    def pointer_path(self, model: str) -> Path:
        return self.model_dir(model) / POINTER

    # -- versions ----------------------------------------------------------------------------------

    def staging(self, model: str) -> Path:
        """A fresh private folder to write an artefact into before :meth:`publish`."""
        folder = self.model_dir(model) / f".staging-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        return folder

    def publish(self, model: str, staging: Path, metadata: dict[str, Any]) -> str:
        """Move a staged artefact into the next free version; returns the version name.

        ``metadata`` is stored as ``metadata.json`` with ``version``, ``model``, ``created_at``
        and ``code_version`` filled in when absent. Concurrent publishers each get their own
        version: the rename fails on a taken name and the next number is tried.
        """
        staging = Path(staging)
        if not staging.is_dir():
            raise RegistryError(f"no staged artefact at {staging}")
        for _ in range(1000):
            version = self._next_version(model)
            meta = {"model": model, "version": version, "created_at": time.time(), "code_version": code_version(),
                    **metadata}
            meta["version"], meta["model"] = version, model
            _write_json(staging / METADATA, meta)
            try:
                os.rename(staging, self.path(model, version))
            except OSError:
                if self.path(model, version).exists():
                    continue  # another publisher took this number
                raise
            return version
        raise RegistryError(f"could not find a free version for {model!r}")

    def _next_version(self, model: str) -> str:
        numbers = [int(m.group(1)) for p in self._dirs(model) if (m := _VERSION.match(p.name))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def _dirs(self, model: str) -> list[Path]:
        folder = self.model_dir(model)
        return [p for p in folder.iterdir() if p.is_dir()] if folder.exists() else []

    def versions(self, model: str) -> list[dict[str, Any]]:
        """Metadata of every version, oldest first."""
        out = []
        for p in sorted(self._dirs(model), key=lambda p: p.name):
            if _VERSION.match(p.name):
                out.append(self.metadata(model, p.name))
        return out

    def models(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)) \
            if self.root.exists() else []

    def metadata(self, model: str, version: str) -> dict[str, Any]:
        path = self.path(model, version) / METADATA
        if not path.exists():
            raise RegistryError(f"{model} has no version {version!r}")
        return json.loads(path.read_text())

    def update_metadata(self, model: str, version: str, **changes: Any) -> dict[str, Any]:
        """Add fields (e.g. the evaluation report) to a version's metadata, atomically."""
        meta = {**self.metadata(model, version), **changes}
        _write_json(self.path(model, version) / METADATA, meta)
        return meta

    # -- the pointer -------------------------------------------------------------------------------

    def pointer(self, model: str) -> Pointer:
        path = self.pointer_path(model)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return Pointer(None)
        return Pointer(raw.get("version"), tuple(raw.get("history") or ()), raw.get("promoted_at"),
                       raw.get("reason") or "")

    def current(self, model: str) -> str | None:
        """The promoted version, None for the base model."""
        return self.pointer(model).version

    def current_path(self, model: str) -> Path | None:
        version = self.current(model)
        return None if version is None else self.path(model, version)

    def promote(self, model: str, version: str, reason: str = "") -> Pointer:
        """Point ``model`` at ``version`` (which must exist); the old one goes on the history stack."""
        self.metadata(model, version)  # raises for an unknown version
        old = self.pointer(model)
        if old.version == version:
            return old
        history = old.history + ((old.version,) if old.version is not None else ())
        new = Pointer(version, history, time.time(), reason)
        _write_json(self.pointer_path(model), new.to_json())
        return new

    def rollback(self, model: str, reason: str = "rollback") -> Pointer:
        """Back to the version promoted before the current one (None: the base model)."""
        old = self.pointer(model)
        if old.version is None:
            raise RegistryError(f"{model}: nothing is promoted, nothing to roll back")
        previous = old.history[-1] if old.history else None
        new = Pointer(previous, old.history[:-1], time.time(), reason)
        _write_json(self.pointer_path(model), new.to_json())
        return new

    def remove_staging(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)


def _write_json(path: Path, value: Any) -> None:
    """Write to a temporary sibling and ``os.replace``: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as fh:
        json.dump(value, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


__all__ = ["ModelRegistry", "Pointer", "RegistryError", "code_version"]
