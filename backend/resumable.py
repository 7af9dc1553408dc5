"""Resumable uploads: the tus protocol 1.0.0 (core, creation and termination), for files too large
to send in one request that must survive a dropped connection.

    POST   /api/uploads       Upload-Length, Upload-Metadata "filename <base64>"  -> 201, Location
    HEAD   /api/uploads/<id>  -> Upload-Offset: the bytes the server holds
    PATCH  /api/uploads/<id>  Upload-Offset, application/offset+octet-stream body -> new offset
    DELETE /api/uploads/<id>  -> 204: the upload and its bytes are gone

Each upload is a folder DATA_DIR/uploads/<id>/ with `info.json` (length, file name) and `data`.
The offset is the size of `data`: the bytes that reached the disk are the truth, so an offset
survives a dropped connection (whatever arrived before the drop is kept) and a server restart.
An upload that receives nothing for CRYOCLUST_UPLOAD_KEEP_DAYS is deleted.
A finished upload becomes (part of) a dataset through POST /api/datasets/from-uploads, with the
same checks as a multipart upload.

Why not a library: the FastAPI tus servers looked at wrote on the event loop, built absolute
Location URLs from X-Forwarded-* headers, and asked for metadata the protocol leaves optional;
the core protocol is small enough to keep here, streamed to disk off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from backend.storage import ACCEPTED_SUFFIXES, UploadError, safe_name

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination"
OCTET_STREAM = "application/offset+octet-stream"
_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class PendingUpload:
    id: str
    folder: Path
    length: int
    filename: str

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def offset(self) -> int:
        return self.data.stat().st_size

    @property
    def complete(self) -> bool:
        return self.offset == self.length


def parse_metadata(header: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated "key base64value" pairs (the value may be absent)."""
    found: dict[str, str] = {}
    for pair in (header or "").split(","):
        parts = pair.strip().split(" ")
        if not parts[0]:
            continue
        if len(parts) > 2:
            raise UploadError(400, f"Upload-Metadata: cannot read {pair.strip()!r}")
        try:
            value = base64.b64decode(parts[1], validate=True).decode("utf-8") if len(parts) == 2 else ""
        except (binascii.Error, UnicodeDecodeError):
            raise UploadError(
                400, f"Upload-Metadata: the value of {parts[0]!r} is not base64 of UTF-8 text"
            ) from None
        found[parts[0]] = value
    return found


def require_version(header: str | None) -> None:
    if header != TUS_VERSION:
        raise UploadError(412, f"send Tus-Resumable: {TUS_VERSION} (this server speaks tus {TUS_VERSION})")


def parse_length(value: str | None, name: str) -> int:
    if value is None or not value.isdigit():
        raise UploadError(400, f"{name} must be a non-negative whole number of bytes")
    return int(value)


class UploadStore:
    """Pending uploads under DATA_DIR/uploads/."""

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.root = Path(data_dir) / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def create(self, length: int, metadata: dict[str, str]) -> PendingUpload:
        filename = metadata.get("filename") or metadata.get("name")
        if not filename:
            raise UploadError(400, "Upload-Metadata needs the file's name: filename <base64 of the name>")
        name = safe_name(filename)
        if not name.lower().endswith(ACCEPTED_SUFFIXES):
            raise UploadError(415, f"{name}: not a particle file (use .mrcs, .mrc, .star or .cs)")
        if length == 0:
            raise UploadError(400, f"{name}: the file is empty")
        if length > self.max_bytes:
            raise UploadError(413, f"{name}: {length:,} bytes is larger than the limit of {self.max_bytes:,}")
        upload_id = secrets.token_hex(16)
        tmp = self.root / f".{upload_id}.tmp"
        tmp.mkdir()
        (tmp / "info.json").write_text(json.dumps({"length": length, "filename": name}))
        (tmp / "data").touch()
        os.replace(tmp, self.root / upload_id)  # never half an upload folder
        return self.get(upload_id)

    def get(self, upload_id: str) -> PendingUpload:
        folder = self.root / upload_id
        if not _ID.match(upload_id) or not (folder / "info.json").is_file():
            raise UploadError(404, f"no upload {upload_id}")
        info = json.loads((folder / "info.json").read_text())
        return PendingUpload(upload_id, folder, int(info["length"]), str(info["filename"]))

    def remove(self, upload: PendingUpload) -> None:
        shutil.rmtree(upload.folder, ignore_errors=True)

    def remove_abandoned(self, keep_seconds: float) -> list[str]:
        """Delete the uploads that received no byte for `keep_seconds` (and half-made folders)."""
        removed, cutoff = [], time.time() - keep_seconds
        for folder in self.root.iterdir():
            try:
                last = max(p.stat().st_mtime for p in [folder, *folder.iterdir()])
            except (FileNotFoundError, NotADirectoryError):
                continue
            if last < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed

    async def append(
        self, upload: PendingUpload, offset: int, declared: int | None, body: AsyncIterator[bytes], write
    ) -> int:
        """Write the body at `offset` (which must be where the upload stands); returns the new
        offset. A dropped connection keeps what arrived. `write(function, *args)` runs a disk
        write off the event loop."""
        out = await write(open, upload.data, "ab")
        with out:
            try:
                fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise UploadError(
                        423, "another request is writing this upload; ask its offset again shortly"
                    ) from None
                raise
            current = out.seek(0, os.SEEK_END)
            if offset != current:
                raise UploadError(
                    409,
                    f"Upload-Offset {offset:,} is not where the upload stands ({current:,}); "
                    "ask its offset with HEAD",
                )
            if declared is not None and offset + declared > upload.length:
                raise UploadError(
                    400,
                    f"{offset:,} + {declared:,} bytes is more than the upload's length ({upload.length:,})",
                )
            try:
                async for chunk in body:
                    if current + len(chunk) > upload.length:
                        raise UploadError(400, f"more bytes than the upload's length ({upload.length:,})")
                    if chunk:
                        await write(out.write, chunk)
                        current += len(chunk)
            finally:
                # What reached the file stays: the next PATCH resumes from there.
                await write(_flush, out)
        return current


def _flush(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())
