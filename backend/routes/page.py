"""The page: frontend/index.html at /, its files at /static/ (mounted by backend.app), Plotly.js
from the plotly package."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from backend.deps import SettingsDep

router = APIRouter(include_in_schema=False)


class NoCacheStaticFiles(StaticFiles):
    """The page's scripts and styles, revalidated on every load (no build step, no hashes)."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def plotly_js() -> Path:
    """plotly.min.js as bundled in the installed plotly Python package (no CDN)."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"


@router.get("/")
def index(settings: SettingsDep) -> FileResponse:
    """The single page."""
    path = settings.FRONTEND_DIR / "index.html"
    if not path.is_file():
        raise HTTPException(404, f"the page is missing: {path}")
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


@router.get("/vendor/plotly.min.js")
def vendor_plotly() -> FileResponse:
    """Plotly.js from the plotly Python package."""
    return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})
