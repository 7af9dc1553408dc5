"""Short aliases for what the routes need: a database session, the settings, the files."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from backend.dispatch import Dispatcher
from cryoclust.core.settings import Settings
from backend.storage import StackCache, Storage


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.db.session() as session:
        yield session


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


def get_stacks(request: Request) -> StackCache:
    return request.app.state.stacks


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
StacksDep = Annotated[StackCache, Depends(get_stacks)]


def require_token(request: Request) -> None:
    """With CRYOCLUST_API_TOKEN set: a Bearer header, or ?token= (EventSource, links, forms)."""
    expected = request.app.state.settings.API_TOKEN
    if not expected:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not given:
        given = request.query_params.get("token", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})
