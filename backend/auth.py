"""Who may use the API when CRYOCLUST_API_TOKEN is set: scripts send the token as a Bearer
header; the page signs in once (POST /api/session) and then carries an HttpOnly, SameSite=Strict
session cookie, so the token never appears in a URL, a browser history or a proxy log.

The cookie holds an HMAC of the token, not the token: it opens this server and nothing else, and
changing the token signs every browser out. A request authenticated by the cookie that changes
something (POST, DELETE, ...) must also come from this server's own page: its Origin (or, when
a browser sends none, its Referer) must be this server's origin or one of CRYOCLUST_CORS_ORIGINS.
That refuses a cross-site form or fetch even from a browser that ignores SameSite.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from backend.deps import SettingsDep

SESSION_COOKIE = "cryoclust_session"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SESSION_DAYS = 7


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"cryoclust browser session v1", hashlib.sha256).hexdigest()


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def same_origin(request: Request, allowed: list[str]) -> bool:
    """Whether a cookie-authenticated request that changes something comes from our page."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
    origin = request.headers.get("origin")
    claimed = _origin_of(origin) if origin and origin != "null" else None
    if claimed is None and origin is None:
        referer = request.headers.get("referer")
        claimed = _origin_of(referer) if referer else None
    return claimed is not None and (claimed == own or claimed in {a.lower().rstrip("/") for a in allowed})


def require_token(request: Request, settings: SettingsDep) -> None:
    """With CRYOCLUST_API_TOKEN set: a Bearer header, or the page's session cookie (plus the
    Origin check for requests that change something)."""
    expected = settings.API_TOKEN
    if not expected:
        return
    given = bearer(request)
    if given:
        if token_matches(given, expected):
            return
    else:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and token_matches(cookie, session_value(expected)):
            if request.method in SAFE_METHODS or same_origin(request, settings.cors_origins):
                return
            raise HTTPException(403, "cross-origin request refused: sign in on this server's own page")
    raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})
