"""``POST /v1/feedback``: what the user did with what they were shown (DESIGN §6).

The app reports impressions, clicks, saves, purchases and dismissals of items it got from a
suggestions or search response, naming that response's ``request_id``. Each report is appended to
the event store (collection ``feedback``, beside the impressions the API logs itself) and the flow
turns impressions plus later feedback into the bandit's rewards (:mod:`flows.attribution`).

Feedback is accepted (202) once it is stored, not once it is learned from: learning happens in the
flow, within seconds. A click is also a real engagement, so the flow counts it in the user's and
the item's features like any other click.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from serving.deps import ServicesDep
from serving.errors import ApiError
from serving.impressions import FEEDBACK_COLLECTION
from serving.schemas import ERROR_RESPONSES, USER_ID_PATTERN, IsoTime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["feedback"], responses=ERROR_RESPONSES)

FeedbackKind = Literal["impression", "click", "save", "purchase", "dismiss"]
#: Request ids are the API's own (32 hex digits today); the pattern leaves room for others' ids.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
#: Item ids come from the businesses' documents (Mongo ObjectIds, slugs, …): printable, no spaces.
ITEM_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]{1,128}$"
#: A phone's clock may run a little fast; a time further ahead than this is a bug, not feedback.
MAX_CLOCK_AHEAD = timedelta(minutes=5)


def _not_in_future(value: datetime | None) -> datetime | None:
    if value is not None and value > datetime.now(UTC) + MAX_CLOCK_AHEAD:
        raise ValueError("must not be in the future (more than 5 minutes ahead of the server clock)")
    return value


class FeedbackIn(BaseModel):
    """One thing a user did with an item a response showed them."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="request_id of the response that showed the item",
                            examples=["3f2b9c0d4e5f46a7b8c9d0e1f2a3b4c5"])
    user_id: str = Field(pattern=USER_ID_PATTERN, examples=["u0042"])
    item_id: str = Field(pattern=ITEM_ID_PATTERN, examples=["b0007-012"])
    kind: FeedbackKind = Field(description="impression, click, save, purchase or dismiss")
    ts: Annotated[IsoTime | None, AfterValidator(_not_in_future)] = Field(
        None, description="when it happened (ISO-8601); default: when the server receives it")
    position: int | None = Field(None, ge=0, le=1000, description="0-based position of the item in the response")


class FeedbackAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    feedback_id: str = Field(description="id of the stored feedback document")
    event_position: str = Field(description="position of the document in the event store")
    ts: datetime = Field(description="the event time recorded")


@router.post(
    "/feedback",
    status_code=202,
    response_model=FeedbackAccepted,
    summary="Report an impression, click, save, purchase or dismissal of a suggested item",
)
def post_feedback(body: FeedbackIn, services: ServicesDep) -> FeedbackAccepted:
    try:
        item = services.catalog.get(body.item_id)
    except Exception:
        log.error("catalog lookup failed for %s", body.item_id, exc_info=True)
        raise ApiError(503, "could not check the item: the catalog is not answering") from None
    if item is None:
        raise ApiError(404, f"unknown item {body.item_id!r}: it is not in the catalog",
                       [{"field": "item_id", "message": "no such item", "type": "not_found"}])
    ts = body.ts or datetime.now(UTC)
    feedback_id = f"fb-{uuid.uuid4().hex}"
    # The shape is the contract with the "feedback" decoder (kairos/collections.yaml). The category
    # comes from the catalog so the flow can credit the user's interest without a lookup.
    document = {
        "_id": feedback_id,
        "kind": body.kind,
        "request_id": body.request_id,
        "user_id": body.user_id,
        "item_id": body.item_id,
        "ts": ts.isoformat(),
        "position": body.position,
        "category": item.category,
        "business_id": item.business_id,
        "source": "api",
    }
    try:
        (position,) = services.event_store.append(FEEDBACK_COLLECTION, [document])
    except Exception:
        log.error("appending feedback for %s failed", body.user_id, exc_info=True)
        raise ApiError(503, "could not record the feedback: the event store is not answering") from None
    return FeedbackAccepted(feedback_id=feedback_id, event_position=position, ts=ts)
