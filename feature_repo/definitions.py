"""Feast objects for Kairos, generated from the specs in :mod:`kairos.features`.

``feast apply`` / ``feast ui`` in this folder pick up the module-level objects below; Kairos code
calls :func:`feast_objects` with the offline-log folder of its own settings.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Bool, Float64, Int64, String

from kairos.features import VIEWS, ViewSpec

_FEAST_TYPES = {"int": Int64, "float": Float64, "str": String, "bool": Bool}

ENTITY_DESCRIPTIONS = {
    "user_id": "A person using the consumer app.",
    "item_id": "An offer, event or service slot published by a business.",
    "cell": "An H3 cell (resolution KAIROS_H3_RESOLUTION).",
    "category": "A normalised item category.",
}


def entities() -> dict[str, Entity]:
    return {
        key: Entity(name=key, join_keys=[key], value_type=ValueType.STRING, description=text)
        for key, text in ENTITY_DESCRIPTIONS.items()
    }


def _view(spec: ViewSpec, entity_objects: dict[str, Entity], offline_dir: Path) -> tuple[FeatureView, PushSource]:
    batch = FileSource(
        name=f"{spec.name}_log",
        path=str(offline_dir / "features" / spec.name),
        timestamp_field="event_timestamp",
    )
    push = PushSource(name=f"{spec.name}_push", batch_source=batch)
    view = FeatureView(
        name=spec.name,
        entities=[entity_objects[e] for e in spec.entities],
        # TTL 0 means "never expires": windows already age out inside the rows themselves.
        ttl=timedelta(0),
        schema=[Field(name=f.name, dtype=_FEAST_TYPES[f.dtype], description=f.description) for f in spec.fields],
        source=push,
        online=True,
        description=spec.description,
        tags={"freshness_s": str(spec.freshness_s)},
    )
    return view, push


def feast_objects(offline_dir: Path) -> list[Any]:
    """Every Feast object of the project, with batch sources under ``offline_dir``."""
    entity_objects = entities()
    objects: list[Any] = list(entity_objects.values())
    for spec in VIEWS.values():
        objects.extend(_view(spec, entity_objects, offline_dir.resolve()))
    return objects


# Module-level names for `feast apply` run in this folder (it collects Feast objects it finds here).
_OFFLINE_DIR = Path(os.environ.get("KAIROS_HOME", "./var")).resolve() / "offline"
_ALL = {obj.name: obj for obj in feast_objects(_OFFLINE_DIR)}
user_id, item_id, cell, category = (_ALL[k] for k in ("user_id", "item_id", "cell", "category"))
user_activity, item_stats = _ALL["user_activity"], _ALL["item_stats"]
cell_demand, cell_supply = _ALL["cell_demand"], _ALL["cell_supply"]
user_activity_push, item_stats_push = _ALL["user_activity_push"], _ALL["item_stats_push"]
cell_demand_push, cell_supply_push = _ALL["cell_demand_push"], _ALL["cell_supply_push"]
