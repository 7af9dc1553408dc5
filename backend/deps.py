"""Short aliases for what the routes need: a database session, the settings, the files.

Only these functions read `request.app.state` (filled once by backend.app.create_app); routes
name what they need by type, which also lets a test override any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from backend.dispatch import Dispatcher
from backend.resumable import UploadStore
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


def get_uploads(request: Request) -> UploadStore:
    return request.app.state.uploads


DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
StacksDep = Annotated[StackCache, Depends(get_stacks)]
UploadsDep = Annotated[UploadStore, Depends(get_uploads)]
