"""The one check every API test makes of an error answer: ``{"error": {"status", "message", …}}``."""

from __future__ import annotations

from typing import Any


def assert_error(response: Any, status: int, *fragments: str) -> dict[str, Any]:
    """The response is ``status`` with only an ``error`` object whose message holds each fragment."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error
