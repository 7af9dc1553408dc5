"""Streamed multipart uploads: each part goes to disk chunk by chunk as it arrives.

FastAPI's UploadFile would spool the whole body to the system temp folder before the endpoint
runs, so the size limit could only be checked afterwards and the data would be written twice.
Here the body is parsed as it streams: files land in a temporary folder under DATA_DIR, hashed on
the way, and the upload stops with 413 the moment it passes the size limit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from backend.storage import ReceivedFile, UploadError, safe_name

FILES_FIELD = "files"
NAME_FIELD = "name"
MAX_NAME_BYTES = 1000
MAX_FILES = 1000


@dataclass
class Received:
    files: list[ReceivedFile] = field(default_factory=list)
    name: str | None = None


class _PartWriter:
    """Callbacks of python-multipart's parser: one open file (or form value) per part."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.total = 0
        self.result = Received()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._file = None
        self._hash = None
        self._current: ReceivedFile | None = None
        self._value: bytearray | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda d, s, e: self._add("_header_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_header_value", d[s:e]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def part_begin(self) -> None:
        self._headers = {}
        self._value = None
        self._current = None

    def header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        field_name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if field_name == FILES_FIELD and filename is not None:
            if len(self.result.files) >= MAX_FILES:
                raise UploadError(400, f"more than {MAX_FILES} files in one upload")
            name = safe_name(filename.decode("utf-8", "replace"))
            if any(f.name == name for f in self.result.files):
                raise UploadError(400, f"two uploaded files are named {name}")
            self._current = ReceivedFile(name=name, path=self.folder / name)
            self._file = open(self._current.path, "xb")
            self._hash = hashlib.sha256()
        elif field_name == NAME_FIELD:
            self._value = bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self.total += len(chunk)
        if self.total > self.max_bytes:
            raise UploadError(413, f"upload larger than the limit of {self.max_bytes:,} bytes")
        if self._file is not None:
            self._file.write(chunk)
            self._hash.update(chunk)
            self._current.size += len(chunk)
        elif self._value is not None:
            if len(self._value) + len(chunk) > MAX_NAME_BYTES:
                raise UploadError(400, f"the name is longer than {MAX_NAME_BYTES} bytes")
            self._value.extend(chunk)

    def part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._current.sha256 = self._hash.hexdigest()
            self.result.files.append(self._current)
        elif self._value is not None:
            self.result.name = self._value.decode("utf-8", "replace").strip() or None
            self._value = None

    def close(self) -> str | None:
        """Close a file left open; returns its name when the body ended inside it."""
        if self._file is None:
            return None
        self._file.close()
        self._file = None
        return self._current.name


async def receive(request: Request, folder: Path, max_bytes: int) -> Received:
    """Parse a multipart/form-data body into `folder` (files) and the optional name field."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UploadError(415, "send the files as multipart/form-data in the field 'files'")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + 64 * 1024:
        raise UploadError(413, f"upload of {int(length):,} bytes is larger than the limit of {max_bytes:,}")
    writer = _PartWriter(folder, max_bytes)
    unfinished = None
    parser = MultipartParser(options[b"boundary"], writer.callbacks())
    try:
        async for chunk in request.stream():
            if chunk:
                # Disk writes and hashing off the event loop, so uploads do not stall streams.
                await run_in_threadpool(parser.write, chunk)
        parser.finalize()
    except ClientDisconnect:
        raise UploadError(400, "the upload was interrupted") from None
    except UploadError:
        raise
    except OSError as exc:
        raise UploadError(507, f"cannot store the upload: {exc.strerror or exc}") from None
    except Exception as exc:  # python-multipart's own parse errors
        raise UploadError(400, f"malformed multipart body: {exc}") from None
    finally:
        unfinished = writer.close()
    if unfinished:
        raise UploadError(400, f"{unfinished}: the upload ended in the middle of the file")
    return writer.result
