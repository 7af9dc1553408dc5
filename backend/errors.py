"""422 answers that are always valid JSON, whatever the client sent.

FastAPI's own handler echoes each error's `input`: raw bytes that are not UTF-8 or a NaN parsed
from the body make that echo fail, and the client gets a 500 instead of the 422 it earned.
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_INPUT_CHARS = 200


def _safe_input(value: object) -> object:
    """The input as given when it is plain JSON, else a short printable stand-in."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)[:MAX_INPUT_CHARS]


def _safe_error(error: dict) -> dict:
    safe = {
        "type": error.get("type"),
        "loc": [p if isinstance(p, (int, str)) else str(p) for p in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
    }
    if "input" in error:
        safe["input"] = _safe_input(error["input"])
    return safe


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": [_safe_error(e) for e in exc.errors()]}, status_code=422)
