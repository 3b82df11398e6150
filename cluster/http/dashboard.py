"""The web dashboard at ``/``: static files of this package (``static/``: HTML, CSS and a small script, no
build step, nothing fetched from elsewhere) that call the same API as any client, with the bearer token the
user typed (kept in the tab's sessionStorage)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from cluster.http.errors import ApiError

FOLDER = Path(__file__).parent / "static"
MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(FOLDER / "index.html", media_type=MEDIA[".html"], headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/{name}")
async def asset(name: str) -> FileResponse:
    """One of the dashboard's own files (a bare name: nothing outside its folder is reachable)."""
    path = FOLDER / name
    if "/" in name or name.startswith(".") or path.suffix not in MEDIA or not path.is_file():
        raise ApiError(404, "name", f"no dashboard file {name!r}", "not_found_error")
    return FileResponse(path, media_type=MEDIA[path.suffix], headers={"Cache-Control": "no-cache"})
