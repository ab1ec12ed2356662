"""The analysts' page (DESIGN §6): ``/ui`` serves the static files in ``serving/ui`` (HTML, JS, CSS;
nothing from the internet). The page itself holds no data: it asks for an API key once, keeps it
in the browser's localStorage and calls ``/v1/features`` with ``Authorization: Bearer <key>``."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, RedirectResponse

from serving.errors import ApiError

UI_DIR = FsPath(__file__).resolve().parent.parent / "ui"
MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}

router = APIRouter(tags=["ui"], include_in_schema=False)


@router.get("/ui")
def index() -> FileResponse:
    # no-cache: a redeployed page must not run against an API it was not written for.
    return FileResponse(UI_DIR / "index.html", media_type=MEDIA[".html"], headers={"Cache-Control": "no-cache"})


@router.get("/ui/")
def index_slash() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui/{name}")
def asset(name: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]+\.[a-z]{2,4}$")]) -> FileResponse:
    # Only plain file names of this folder with a known type: no paths, no traversal.
    path = UI_DIR / name
    if path.suffix not in MEDIA or not path.is_file():
        raise ApiError(404, f"no such file of the UI: {name}")
    return FileResponse(path, media_type=MEDIA[path.suffix], headers={"Cache-Control": "no-cache"})
