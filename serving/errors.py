"""One error shape for every failure: ``{"error": {"status", "message", "details"?}}``.

Clients branch on ``status`` and show ``message``; nothing internal (stack traces, paths, SQL)
ever reaches them. Validation errors name the field ("lat: must be between -90 and 90") because
"422 Unprocessable Entity" alone does not tell an app developer what to fix.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

#: Where a request value came from; left out of field names since the client knows.
_LOCATIONS = {"query", "path", "body", "header", "cookie"}


class ApiError(Exception):
    """An error the API reports on purpose, with its status and a message meant for the client."""

    def __init__(self, status: int, message: str, details: Sequence[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = list(details) if details else None
        #: Response headers the status calls for (``WWW-Authenticate`` on 401, ``Retry-After`` on 429).
        self.headers = headers


def error_body(status: int, message: str, details: Sequence[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def error_response(
    status: int, message: str, details: Sequence[Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, details), status_code=status, headers=headers)


def field_name(loc: Sequence[Any]) -> str:
    """``("query", "lat")`` -> ``lat``; ``("body", "items", 0, "price")`` -> ``items[0].price``."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS and len(parts) > 1:
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "request"


def readable(error: dict[str, Any]) -> str:
    """Pydantic's message rephrased for people: "Input should be ..." -> "must be ..."."""
    kind = error.get("type", "")
    message = str(error.get("msg", "is invalid"))
    if kind == "missing":
        return "is required"
    if kind == "json_invalid":
        loc = list(error.get("loc", ()))
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return f"is not valid JSON{where} ({error.get('ctx', {}).get('error', 'syntax error')})"
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        return f"must match {pattern}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if message.startswith("Input should be"):
        message = "must be" + message[len("Input should be") :]
    elif message.startswith("Input should"):
        message = "must" + message[len("Input should") :]
    return message


def validation_details(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    details = []
    for error in errors:
        # A syntax error's location is a character offset, not a field: name the body instead.
        field = "body" if error.get("type") == "json_invalid" else field_name(error.get("loc", ()))
        details.append({"field": field, "message": readable(error), "type": error.get("type", "value_error")})
    return details


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = validation_details(exc.errors())
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return error_response(422, message, details)


async def _api_error_handler(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.details, headers=exc.headers)


async def _http_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no such path: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    # The id ties the client's report to the full traceback in our log without showing it to them.
    incident = uuid.uuid4().hex[:12]
    log.error("unhandled error %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error (incident {incident}); the failure has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the one error shape."""
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_handler)
