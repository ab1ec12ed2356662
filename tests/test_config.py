"""Settings: environment parsing and clear errors for bad combinations."""

from __future__ import annotations

import pytest

from kairos.config import Settings
from kairos.stores.redis_conn import parse_redis_url


def test_env_values_are_typed(monkeypatch, tmp_path):
    monkeypatch.setenv("KAIROS_HOME", str(tmp_path))
    monkeypatch.setenv("KAIROS_TRAVEL_KM", "42.5")
    monkeypatch.setenv("KAIROS_RECOVERY", "off")
    monkeypatch.setenv("KAIROS_API_PORT", "9001")
    settings = Settings.from_env()
    assert settings.home == tmp_path and settings.travel_km == 42.5
    assert settings.recovery is False and settings.api_port == 9001


@pytest.mark.parametrize(("env", "message"), [
    ({"KAIROS_PROFILE": "cassandra"}, "KAIROS_PROFILE must be 'local' or 'redis'"),
    ({"KAIROS_EVENT_STORE": "kafka"}, "KAIROS_EVENT_STORE must be 'sqlite' or 'mongo'"),
    ({"KAIROS_EVENT_STORE": "mongo"}, "needs KAIROS_MONGO_URL"),
    ({"KAIROS_REDIS_TYPE": "sentinel"}, "KAIROS_REDIS_TYPE must be"),
    ({"KAIROS_H3_RESOLUTION": "16"}, "must be in 0..15"),
])
def test_bad_settings_fail_with_a_clear_message(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_redis_url_in_feast_syntax():
    assert parse_redis_url("10.0.0.5:6380,db=3,password=s3cret") == {
        "host": "10.0.0.5", "port": 6380, "db": 3, "password": "s3cret"}
    with pytest.raises(ValueError, match="not a redis:// URL"):
        parse_redis_url("redis://localhost:6379/0")
    with pytest.raises(ValueError, match="host:port"):
        parse_redis_url("localhost")


def test_a_relative_home_works_for_every_store(tmp_path, monkeypatch):
    from kairos.stores.online_features import OnlineFeatures

    monkeypatch.chdir(tmp_path)
    settings = Settings(home="var", feast_project="relative_home")
    assert settings.home == tmp_path / "var"
    features = OnlineFeatures(settings)
    row = {"cell": "c", "category": "spa", "active_items": 1, "median_price": 2.0, "p25_price": 1.0,
           "mean_discount": None, "as_of": 1.7e9}
    features.write("cell_supply", [row])
    assert features.read_one("cell_supply", {"cell": "c", "category": "spa"})["active_items"] == 1
    assert (tmp_path / "var" / "feast" / "online_store.db").exists()
