"""Short aliases for what the routes need: a database session, the settings, the files.

Only these functions read `request.app.state` (filled once by backend.app.create_app); routes
name what they need by type, which also lets a test override any of them.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from backend.dispatch import Dispatcher
from backend.storage import StackCache, Storage
from cryoclust.core.db import Database
from cryoclust.core.settings import Settings


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_session(db: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with db.session() as session:
        yield session


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


def get_stacks(request: Request) -> StackCache:
    return request.app.state.stacks


DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
StacksDep = Annotated[StackCache, Depends(get_stacks)]


def require_token(request: Request, settings: SettingsDep) -> None:
    """With CRYOCLUST_API_TOKEN set: a Bearer header, or ?token= (EventSource, links, forms)."""
    expected = settings.API_TOKEN
    if not expected:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not given:
        given = request.query_params.get("token", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})
