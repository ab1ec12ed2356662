"""The API key store (SQLite and Redis) and ``kairos keys``: keys stored hashed, scopes checked,
revocation, usage counters, audit log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from kairos.cli import app
from kairos.config import Settings
from kairos.stores.api_keys import (
    InvalidScope,
    create_key,
    list_keys,
    open_api_keys,
    parse_token,
    revoke_key,
)
from kairos.stores.redis_conn import redis_client

REDIS_URL = "127.0.0.1:6379,db=6"


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Any]:
    project = f"kzbkeys{uuid.uuid4().hex[:8]}"
    settings = Settings(home=tmp_path, profile=request.param, redis_url=REDIS_URL, feast_project=project)
    if request.param == "redis":
        try:
            redis_client(REDIS_URL).ping()
        except Exception:  # noqa: BLE001
            pytest.fail("the Redis server at 127.0.0.1:6379 is needed (.ci/run starts it)")
    keys = open_api_keys(settings)
    yield keys
    if request.param == "redis":
        client = redis_client(REDIS_URL)
        for key in client.scan_iter(match=f"kairos:{project}:*"):
            client.delete(key)
    keys.close()


def test_keys_are_stored_hashed_and_verified(store, tmp_path) -> None:
    key, token = create_key(store, "business:b12", name="café", rate_limit_per_min=60, actor="alice")
    key_id, secret = parse_token(token)
    assert key_id == key.key_id and len(secret) >= 40
    stored = store.get(key.key_id)
    assert stored.scope == "business:b12" and stored.business_id == "b12" and stored.rate_limit_per_min == 60
    assert stored.verify(secret) and not stored.verify(secret[:-1] + "x")
    assert secret not in json.dumps(stored.public()) and secret not in stored.secret_hash
    # The secret is nowhere in the store's files.
    for path in tmp_path.glob("api_keys.sqlite*"):
        assert secret.encode() not in path.read_bytes()
    # Two keys never share salt or hash.
    other, _ = create_key(store, "app", actor="alice")
    assert other.salt != key.salt and other.secret_hash != key.secret_hash


def test_revoke_list_usage_and_audit(store) -> None:
    a, _ = create_key(store, "app", actor="alice")
    b, _ = create_key(store, "analyst", actor="alice")
    assert [k.key_id for k in list_keys(store, actor="bob")] == [a.key_id, b.key_id]
    revoked = revoke_key(store, a.key_id, actor="carol")
    assert revoked is not None and not revoked.active and revoked.revoked_by == "carol"
    assert not store.get(a.key_id).active and store.get(b.key_id).active
    assert revoke_key(store, "000000000000", actor="carol") is None
    store.add_usage({b.key_id: (3, 100.0)})
    store.add_usage({b.key_id: (2, 50.0)})  # an older flush from another replica
    assert store.usage()[b.key_id] == {"requests": 5, "last_used": 100.0}
    log = store.audit_log()
    assert [(e["actor"], e["action"]) for e in log[:4]] == [("carol", "revoke"), ("carol", "revoke"),
                                                             ("bob", "list"), ("alice", "create")]
    assert log[1]["key_id"] == a.key_id and log[1]["details"] == {"found": True}
    assert log[0]["details"] == {"found": False}


def test_bad_scopes_and_tokens_are_refused(store) -> None:
    for scope in ("root", "business:", "business:a b", "App", ""):
        with pytest.raises(InvalidScope):
            create_key(store, scope)
    for token in ("", "kairos_", "kairos_XYZ_abc", "bearer kairos_0123456789ab_" + "a" * 43, "sk_live_123"):
        assert parse_token(token) is None


def test_cli_create_list_revoke_audit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KAIROS_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "300")  # error boxes must not wrap the messages checked below
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--scope", "business:b7", "--name", "shop", "--rate-limit", "120/min"])
    assert created.exit_code == 0, created.output
    made = json.loads(created.output)
    assert made["key"].startswith(f"kairos_{made['key_id']}_") and made["rate_limit_per_min"] == 120
    listed = json.loads(runner.invoke(app, ["keys", "list"]).output)
    assert [k["key_id"] for k in listed["keys"]] == [made["key_id"]]
    assert "secret_hash" not in listed["keys"][0] and made["key"] not in json.dumps(listed)
    revoked = runner.invoke(app, ["keys", "revoke", made["key_id"]])
    assert revoked.exit_code == 0 and json.loads(revoked.output)["revoked_by"].startswith("cli:")
    assert json.loads(runner.invoke(app, ["keys", "list"]).output)["count"] == 0
    assert json.loads(runner.invoke(app, ["keys", "list", "--all"]).output)["count"] == 1
    assert runner.invoke(app, ["keys", "revoke", "000000000000"]).exit_code == 1
    bad = runner.invoke(app, ["keys", "create", "--scope", "superuser"])
    assert bad.exit_code != 0 and "scope must be app, analyst, admin or business:<id>" in bad.output
    bad_rate = runner.invoke(app, ["keys", "create", "--scope", "app", "--rate-limit", "fast"])
    assert bad_rate.exit_code != 0 and "120/min" in bad_rate.output
    audit = json.loads(runner.invoke(app, ["keys", "audit"]).output)
    # Newest first; refused creations never reached the store.
    assert [e["action"] for e in audit] == ["revoke", "list", "list", "revoke", "list", "create"]
    assert all(e["actor"].startswith("cli:") and e["ts"] for e in audit)
    assert audit[-1]["details"] == {"scope": "business:b7", "name": "shop", "rate_limit_per_min": 120}
