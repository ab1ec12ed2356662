"""The Kairos HTTP API (DESIGN §6): FastAPI app, one router per resource, pydantic models at the edge."""
