"""Resumable uploads over tus 1.0.0 (backend/resumable.py), and the dataset made of finished ones."""

from __future__ import annotations

import hashlib
import os
import shutil

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from backend.deps import SessionDep, SettingsDep, StorageDep, UploadsDep
from backend.resumable import (
    OCTET_STREAM,
    TUS_EXTENSIONS,
    TUS_VERSION,
    parse_length,
    parse_metadata,
    require_version,
)
from backend.schemas import DatasetFromUploads, DatasetOut
from backend.services import datasets as service
from backend.storage import ReceivedFile, UploadError
from cryoclust.core.tables import Dataset

router = APIRouter(tags=["uploads"])
HASH_CHUNK = 8 * 1024 * 1024


def _tus(**headers: str | int) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **{k.replace("_", "-"): str(v) for k, v in headers.items()}}


@router.options("/uploads", status_code=204)
def upload_options(settings: SettingsDep) -> Response:
    """What this tus server offers: version, extensions, the largest file."""
    return Response(
        status_code=204,
        headers=_tus(
            Tus_Version=TUS_VERSION, Tus_Extension=TUS_EXTENSIONS, Tus_Max_Size=settings.MAX_UPLOAD_BYTES
        ),
    )


@router.post(
    "/uploads", status_code=201, response_class=Response, responses={201: {"description": "created"}}
)
def create_upload(request: Request, uploads: UploadsDep) -> Response:
    """Start a resumable upload of one file (tus creation): headers Tus-Resumable: 1.0.0,
    Upload-Length (bytes) and Upload-Metadata "filename <base64 name>"; answers its Location."""
    require_version(request.headers.get("tus-resumable"))
    if "upload-defer-length" in request.headers:
        raise UploadError(400, "give Upload-Length: uploads of unknown length are not accepted")
    length = parse_length(request.headers.get("upload-length"), "Upload-Length")
    upload = uploads.create(length, parse_metadata(request.headers.get("upload-metadata")))
    return Response(status_code=201, headers=_tus(Location=f"/api/uploads/{upload.id}", Upload_Offset=0))


@router.head("/uploads/{upload_id}", response_class=Response)
def upload_offset(upload_id: str, uploads: UploadsDep) -> Response:
    """How many bytes of the upload the server holds (Upload-Offset), out of Upload-Length."""
    upload = uploads.get(upload_id)
    return Response(
        status_code=200,
        headers=_tus(Upload_Offset=upload.offset, Upload_Length=upload.length, Cache_Control="no-store"),
    )


@router.patch("/uploads/{upload_id}", status_code=204, response_class=Response)
async def append_to_upload(upload_id: str, request: Request, uploads: UploadsDep) -> Response:
    """Send the next bytes (Content-Type application/offset+octet-stream) from Upload-Offset, which
    must be where the upload stands. Whatever arrives before a dropped connection is kept."""
    require_version(request.headers.get("tus-resumable"))
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != OCTET_STREAM:
        raise UploadError(415, f"send the bytes as Content-Type: {OCTET_STREAM}")
    offset = parse_length(request.headers.get("upload-offset"), "Upload-Offset")
    length = request.headers.get("content-length")
    declared = int(length) if length and length.isdigit() else None
    upload = await run_in_threadpool(uploads.get, upload_id)
    try:
        reached = await uploads.append(upload, offset, declared, request.stream(), run_in_threadpool)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to read it; the bytes that came are kept
    except OSError as exc:
        raise UploadError(507, f"cannot store the upload: {exc.strerror or exc}") from None
    return Response(status_code=204, headers=_tus(Upload_Offset=reached))


@router.delete("/uploads/{upload_id}", status_code=204, response_class=Response)
def delete_upload(upload_id: str, request: Request, uploads: UploadsDep) -> Response:
    """Abandon an upload (tus termination): its bytes are deleted."""
    require_version(request.headers.get("tus-resumable"))
    uploads.remove(uploads.get(upload_id))
    return Response(status_code=204, headers=_tus())


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@router.post("/datasets/from-uploads", status_code=201, response_model=DatasetOut, tags=["datasets"])
def dataset_from_uploads(
    body: DatasetFromUploads,
    session: SessionDep,
    storage: StorageDep,
    uploads: UploadsDep,
    settings: SettingsDep,
) -> Dataset:
    """A dataset of finished resumable uploads (a stack, or a .star or .cs with its stacks), checked
    as a multipart upload is. The uploads are used up when it succeeds, and kept when it does not."""
    pending = [uploads.get(upload_id) for upload_id in dict.fromkeys(body.uploads)]
    for upload in pending:
        if not upload.complete:
            raise UploadError(
                409,
                f"upload {upload.id} ({upload.filename}) holds {upload.offset:,} of "
                f"{upload.length:,} bytes: send the rest first",
            )
    total = sum(upload.length for upload in pending)
    if total > settings.MAX_UPLOAD_BYTES:
        raise UploadError(
            413, f"{total:,} bytes together is larger than the limit of {settings.MAX_UPLOAD_BYTES:,}"
        )
    tmp_dir = storage.new_tmp_dir("resumable-")
    try:
        files = []
        for upload in pending:
            target = tmp_dir / upload.filename
            if target.exists():
                raise UploadError(400, f"two uploads are named {upload.filename}")
            try:
                os.link(upload.data, target)  # same filesystem: no copy, and the upload stays intact
            except OSError:
                shutil.copyfile(upload.data, target)
            files.append(
                ReceivedFile(name=upload.filename, path=target, size=upload.length, sha256=_sha256(target))
            )
        dataset = service.add(session, storage, tmp_dir, files, body.name, body.pixel_size)
    finally:
        storage.remove(tmp_dir)
    for upload in pending:
        uploads.remove(upload)
    return dataset
