"""Geography helpers: validated points, H3 cells, distances, bearings and travel times."""

from __future__ import annotations

import math

import h3

EARTH_RADIUS_KM = 6371.0088
#: Below this distance people walk; beyond it they take transit or a car.
WALK_LIMIT_KM = 1.5
WALK_KMH = 4.8
CITY_KMH = 22.0


def valid_point(lat: float, lon: float) -> bool:
    return (
        isinstance(lat, (int, float)) and isinstance(lon, (int, float))
        and not isinstance(lat, bool) and not isinstance(lon, bool)
        and math.isfinite(lat) and math.isfinite(lon)
        and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0
    )


def cell_of(lat: float, lon: float, resolution: int) -> str:
    return h3.latlng_to_cell(lat, lon, resolution)


def cell_center(cell: str) -> tuple[float, float]:
    return h3.cell_to_latlng(cell)


def parent_cell(cell: str, resolution: int) -> str:
    return h3.cell_to_parent(cell, resolution) if h3.get_resolution(cell) > resolution else cell


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial compass bearing from point 1 to point 2, in degrees clockwise from north."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return (math.degrees(math.atan2(x, y)) + 360.0) % 360.0


def travel_minutes(distance_km: float) -> float:
    """A plain estimate: walking for short hops, city speed beyond (no routing engine offline)."""
    if distance_km <= WALK_LIMIT_KM:
        return distance_km / WALK_KMH * 60.0
    return 5.0 + distance_km / CITY_KMH * 60.0


def bounding_box(lat: float, lon: float, radius_km: float) -> tuple[float, float, float, float]:
    """(min_lat, max_lat, min_lon, max_lon) enclosing a circle; used to pre-filter by index."""
    dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
    coslat = max(math.cos(math.radians(lat)), 1e-6)
    dlon = min(180.0, math.degrees(radius_km / (EARTH_RADIUS_KM * coslat)))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon
