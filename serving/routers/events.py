"""Business routes: draft an event from a few keys (generated, moderated) and publish it.

``POST /v1/events/draft`` returns the complete event and its moderation verdict; an approved draft
is published with ``POST /v1/events``, which appends its document to the event store so that it
flows through features, the catalog and suggestions like any other item. Until API keys arrive
(issue #6) the business names itself with ``business_id`` in the body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator

from online.event_drafts import DRAFT_KINDS, DraftKeys, GeneratedDraft
from online.moderation import MediaRef, Verdict
from serving.deps import ServicesDep
from serving.routers.moderation import MODERATION_RESPONSES, get_desk
from serving.schemas import USER_ID_PATTERN, FiniteFloat, IsoTime, Latitude, Longitude

router = APIRouter(prefix="/v1/events", tags=["events"], responses=MODERATION_RESPONSES)

DRAFT_ID_PATTERN = r"^dr-[0-9a-f]{16}$"
BusinessId = Annotated[str, Field(pattern=USER_ID_PATTERN, description="letters, digits and _ . : - (1-64)")]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
Amount = Annotated[FiniteFloat | None, Field(ge=0)]


class MediaIn(BaseModel):
    """A media link. It is never fetched: type and size are as declared."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, examples=["https://cdn.example.com/b12/latte.jpg"])
    content_type: str | None = Field(None, max_length=100, examples=["image/jpeg"])
    size_bytes: int | None = Field(None, ge=0, description="declared size in bytes")

    @field_validator("url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        try:
            parts = urlsplit(value.strip())
        except ValueError:
            raise ValueError("must be an absolute URL such as https://cdn.example.com/photo.jpg") from None
        if not parts.scheme or not parts.netloc:
            raise ValueError("must be an absolute URL such as https://cdn.example.com/photo.jpg")
        return value.strip()


def _media_item(value: Any) -> Any:
    """A bare URL string is a media link without declared type or size."""
    return {"url": value} if isinstance(value, str) else value


class LocationKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: Latitude = Field(examples=[40.7265])
    lon: Longitude = Field(examples=[-73.9815])


class DraftIn(BaseModel):
    """The keys of an event. Prices: ``base_price`` (+ ``discount``), or ``original_price`` +
    ``reduced_price``, or ``price``. Unknown fields are refused, so a typo is not ignored."""

    model_config = ConfigDict(extra="forbid")

    business_id: BusinessId
    kind: Literal["offer", "product", "service", "event", "informative"]
    category: str | None = Field(None, min_length=1, max_length=60, examples=["Café"],
                                 description="any label; a new one maps to the nearest known category")
    location: LocationKey
    valid_from: IsoTime | None = Field(None, description="ISO-8601; default now")
    valid_to: IsoTime | None = Field(None, description="ISO-8601; default depends on the kind")
    base_price: Amount = None
    discount: Annotated[FiniteFloat | None, Field(ge=0, lt=1, description="fraction off base_price: 0.3")] = None
    original_price: Amount = None
    reduced_price: Amount = None
    price: Amount = None
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217; default: the area's")
    media: list[Annotated[MediaIn, BeforeValidator(_media_item)]] = Field(default_factory=list, max_length=10)
    keywords: list[Keyword] = Field(default_factory=list, max_length=10, examples=[["latte", "pastry"]])
    title: str | None = Field(None, min_length=1, max_length=120, description="your own title, used as given")
    description: str | None = Field(None, min_length=1, max_length=1000,
                                    description="your own description, used as given")
    business_name: str | None = Field(None, min_length=1, max_length=80)
    timezone: str | None = Field(None, max_length=64, examples=["America/New_York"],
                                 description="IANA zone the text writes times in; default UTC")
    sku: str | None = Field(None, pattern=USER_ID_PATTERN, description="your product reference (price history)")

    def keys(self) -> DraftKeys:
        return DraftKeys(
            kind=self.kind, lat=self.location.lat, lon=self.location.lon, business_id=self.business_id,
            category=self.category, valid_from=self.valid_from, valid_to=self.valid_to,
            base_price=self.base_price, discount=self.discount, original_price=self.original_price,
            reduced_price=self.reduced_price, price=self.price, currency=self.currency,
            media=tuple(MediaRef(m.url, m.content_type, m.size_bytes) for m in self.media),
            keywords=tuple(self.keywords), title=self.title, description=self.description,
            business_name=self.business_name, timezone=self.timezone, sku=self.sku,
        )


class CategoryOut(BaseModel):
    value: str = Field(description="the normalised category")
    given: str | None
    method: Literal["known", "synonym", "keywords", "embedding", "default"]
    similarity: float | None = Field(None, description="cosine similarity when found by embedding")


class DraftEventOut(BaseModel):
    item_id: str
    kind: str
    collection: str = Field(description="event-store collection it is published to")
    business_id: str
    title: str
    description: str
    tags: list[str]
    category: CategoryOut
    price: float | None
    original_price: float | None
    discount: float | None = Field(description="0..1 off the original price")
    currency: str
    valid_from: datetime
    valid_to: datetime
    starts_at: datetime | None
    lat: float
    lon: float
    cell: str
    media: list[MediaIn]
    keywords: list[str]


class FindingOut(BaseModel):
    code: str
    label: str
    action: Literal["review", "reject"]
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)


class ModerationOut(BaseModel):
    verdict: Literal["approve", "review", "reject"]
    primary_label: str
    reasons: list[FindingOut]
    scores: dict[str, float]


class WordingOut(BaseModel):
    template: str
    learned_phrases: list[str] = Field(description="wording learned from the best-performing items")


class DraftOut(BaseModel):
    draft_id: str
    status: Literal["approved", "pending_review", "rejected", "published"]
    next_step: str
    event: DraftEventOut
    document: dict[str, Any] = Field(description="the document POST /v1/events appends to the event store")
    moderation: ModerationOut
    wording: WordingOut


class PublishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    draft_id: str = Field(pattern=DRAFT_ID_PATTERN)
    business_id: BusinessId


class PublishOut(BaseModel):
    draft_id: str
    item_id: str
    collection: str
    event_position: str = Field(description="position of the document in the event store")
    document: dict[str, Any]


class DraftStatusOut(BaseModel):
    draft_id: str
    item_id: str
    business_id: str
    status: Literal["approved", "pending_review", "rejected", "published"]
    verdict: Literal["approve", "review", "reject"]
    reasons: list[FindingOut]
    document: dict[str, Any]
    created_at: datetime
    published_at: datetime | None
    event_position: str | None


NEXT_STEPS = {
    "approved": "publish it: POST /v1/events with draft_id and business_id",
    "pending_review": "a moderator will look at it; check GET /v1/events/drafts/{draft_id}",
    "rejected": "fix what the reasons name and draft again",
}


def _draft_out(draft_id: str, status: str, draft: GeneratedDraft, verdict: Verdict) -> DraftOut:
    return DraftOut(
        draft_id=draft_id,
        status=status,  # type: ignore[arg-type]
        next_step=NEXT_STEPS[status].replace("{draft_id}", draft_id),
        event=DraftEventOut(
            item_id=draft.item_id, kind=draft.kind, collection=draft.collection, business_id=draft.business_id,
            title=draft.title, description=draft.description, tags=draft.tags,
            category=CategoryOut(value=draft.category.category, given=draft.category.given,
                                 method=draft.category.method,  # type: ignore[arg-type]
                                 similarity=draft.category.similarity),
            price=draft.prices.price, original_price=draft.prices.original_price, discount=draft.discount,
            currency=draft.currency, valid_from=draft.valid_from, valid_to=draft.valid_to,
            starts_at=draft.starts_at, lat=draft.lat, lon=draft.lon, cell=draft.cell,
            media=[MediaIn(url=m.url, content_type=m.content_type, size_bytes=m.size_bytes) for m in draft.media],
            keywords=list(draft.keywords),
        ),
        document=draft.document,
        moderation=ModerationOut(
            verdict=verdict.verdict,  # type: ignore[arg-type]
            primary_label=verdict.primary_label,
            reasons=[FindingOut(**f.as_dict()) for f in verdict.findings],
            scores=dict(verdict.scores),
        ),
        wording=WordingOut(template=draft.template, learned_phrases=list(draft.learned_phrases)),
    )


@router.post("/draft", response_model=DraftOut, summary="Generate a complete event from keys and moderate it")
def post_draft(body: DraftIn, services: ServicesDep) -> DraftOut:
    record, draft, verdict = get_desk(services).draft(body.keys())
    return _draft_out(record.draft_id, record.status, draft, verdict)


@router.post("", response_model=PublishOut, status_code=201,
             summary="Publish an approved draft to the event store")
def post_event(body: PublishIn, services: ServicesDep) -> PublishOut:
    record, position, document = get_desk(services).publish(body.draft_id, body.business_id)
    return PublishOut(draft_id=record.draft_id, item_id=record.item_id, collection=record.collection,
                      event_position=position, document=document)


@router.get("/drafts/{draft_id}", response_model=DraftStatusOut, summary="A draft's status and verdict")
def get_draft(
    draft_id: Annotated[str, Path(pattern=DRAFT_ID_PATTERN)],
    business_id: Annotated[str, Query(pattern=USER_ID_PATTERN, description="the business that drafted it")],
    services: ServicesDep,
) -> DraftStatusOut:
    record = get_desk(services).get_draft(draft_id, business_id)
    return DraftStatusOut(
        draft_id=record.draft_id, item_id=record.item_id, business_id=record.business_id,
        status=record.status,  # type: ignore[arg-type]
        verdict=record.verdict,  # type: ignore[arg-type]
        reasons=[FindingOut(**f) for f in record.findings], document=record.document,
        created_at=datetime.fromtimestamp(record.created_ts, UTC),
        published_at=datetime.fromtimestamp(record.published_ts, UTC) if record.published_ts else None,
        event_position=record.position,
    )


__all__ = ["DRAFT_KINDS", "DraftIn", "router"]
