"""Signing the page in and out: the token once, then an HttpOnly session cookie (backend/auth.py)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from backend.auth import (
    SESSION_COOKIE,
    SESSION_DAYS,
    bearer,
    session_value,
    token_matches,
)
from backend.deps import SettingsDep

router = APIRouter(tags=["session"])


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=1000)


class SessionOut(BaseModel):
    signed_in: bool
    token_required: bool


@router.get("/session", response_model=SessionOut)
def session_state(request: Request, settings: SettingsDep) -> dict:
    """Whether this server asks for a token, and whether this browser (or header) is signed in."""
    expected = settings.API_TOKEN
    if not expected:
        return {"signed_in": True, "token_required": False}
    given = bearer(request)
    ok = (
        token_matches(given, expected)
        if given
        else token_matches(request.cookies.get(SESSION_COOKIE, ""), session_value(expected))
    )
    return {"signed_in": ok, "token_required": True}


@router.post("/session", response_model=SessionOut)
def sign_in(body: SignIn, request: Request, response: Response, settings: SettingsDep) -> dict:
    """Check the API token once and set the page's session cookie (HttpOnly, SameSite=Strict)."""
    expected = settings.API_TOKEN
    if not expected:
        return {"signed_in": True, "token_required": False}
    if not token_matches(body.token, expected):
        raise HTTPException(401, "wrong API token", headers={"WWW-Authenticate": "Bearer"})
    response.set_cookie(
        SESSION_COOKIE,
        session_value(expected),
        max_age=SESSION_DAYS * 24 * 3600,
        path="/api",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return {"signed_in": True, "token_required": True}


@router.delete("/session", status_code=204)
def sign_out() -> Response:
    """Sign the page out: the session cookie is removed."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/api", httponly=True, samesite="strict")
    return response
