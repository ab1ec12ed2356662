"""App route: users report an item or another user.

Reports from enough distinct users (fewer for prohibited, violent, adult or hateful content) move
an item to review, which takes it out of suggestions until a moderator decides, and queue a user
for a moderator; repeat offenders are suspended (see :mod:`serving.routers.moderation`). Until
API keys arrive (issue #6) the reporter names itself with ``reporter_id``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from serving.deps import ServicesDep
from serving.routers.moderation import MODERATION_RESPONSES, get_desk
from serving.schemas import USER_ID_PATTERN

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=MODERATION_RESPONSES)

Id = Annotated[str, Field(pattern=USER_ID_PATTERN, description="letters, digits and _ . : - (1-64)")]
Reason = Literal["spam", "scam", "prohibited", "violence", "adult", "hate", "harassment", "fake", "other"]


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reporter_id: Id
    target_type: Literal["item", "user"]
    target_id: Id
    reason: Reason
    details: str | None = Field(None, max_length=500, description="what the reporter saw, in their words")


class ReportOut(BaseModel):
    report_id: str
    target_type: str
    target_id: str
    reason: str
    status: Literal["open"]
    distinct_reporters: int = Field(description="users who reported this target in the report window")
    threshold: int = Field(description="reporters needed before a moderator must look")
    action: Literal["none", "item_in_review", "queued_for_review"] = Field(
        description="item_in_review: the item left suggestions until a moderator decides"
    )
    queue_id: str | None


@router.post("", response_model=ReportOut, status_code=201, summary="Report an item or a user")
def post_report(body: ReportIn, services: ServicesDep) -> ReportOut:
    outcome = get_desk(services).report(body.reporter_id, body.target_type, body.target_id, body.reason, body.details)
    return ReportOut(report_id=outcome.report_id, target_type=body.target_type, target_id=body.target_id,
                     reason=body.reason, status="open", distinct_reporters=outcome.distinct_reporters,
                     threshold=outcome.threshold, action=outcome.action,  # type: ignore[arg-type]
                     queue_id=outcome.queue_id)
