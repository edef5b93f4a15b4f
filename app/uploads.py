"""The upload, read as it streams: the ``file`` part of a multipart body, held in memory only.

Starlette's form parser writes any part over 1 MB to a temporary file and reads the whole body before a route can
check its size. This reader refuses a body over the limit as soon as the declared length or the bytes received
pass it (nothing is written anywhere), refuses a second ``file`` part, and gives up on a body that stalls.
"""

from __future__ import annotations

import asyncio
import time

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.errors import APIError
from model.errors import ErrorCode

FIELD = "file"
# The multipart envelope around the file: boundaries and part headers. Generous, and still tiny.
ENVELOPE_BYTES = 16 * 1024
MAX_BOUNDARY = 200  # RFC 2046 allows 70; python-multipart refuses more than 256 (as an unhandled error)
# Every part costs parser callbacks on the event loop whatever it holds (an outside probe: 1.75 M empty parts in
# 15 MB took 4.1 s of loop CPU). A client sends one file part and perhaps a few fields.
MAX_PARTS = 16
MAX_PART_HEADER_BYTES = 8 * 1024


class _FilePart:
    """Collects the ``file`` part from the parser's callbacks."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.data = bytearray()
        self.parts = 0
        self.all_parts = 0
        self._header_bytes = 0
        self._header_field = b""
        self._header_value = b""
        self._name: bytes | None = None
        self._in_file = False

    def _too_large(self) -> APIError:
        return APIError(
            413, ErrorCode.FILE_TOO_LARGE, f"uploads are limited to {self.max_bytes} bytes", {"max_bytes": self.max_bytes}
        )

    def on_part_begin(self) -> None:
        self._name, self._in_file, self._header_bytes = None, False, 0
        self.all_parts += 1
        if self.all_parts > MAX_PARTS:
            raise APIError(
                400, ErrorCode.MALFORMED_BODY, f"the body has more than {MAX_PARTS} parts", {"max_parts": MAX_PARTS}
            )

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise APIError(
                400,
                ErrorCode.MALFORMED_BODY,
                f"a part's headers are longer than {MAX_PART_HEADER_BYTES} bytes",
                {"max_part_header_bytes": MAX_PART_HEADER_BYTES},
            )

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            _, params = parse_options_header(self._header_value)
            self._name = params.get(b"name")
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        if self._name == FIELD.encode():
            self.parts += 1
            if self.parts > 1:
                raise APIError(
                    422,
                    ErrorCode.VALIDATION_ERROR,
                    "send one photo per request: the body has more than one 'file' part",
                    [{"loc": ["body", FIELD], "msg": "more than one file part", "type": "value_error"}],
                )
            self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            if len(self.data) + (end - start) > self.max_bytes:
                raise self._too_large()
            self.data += data[start:end]

    def on_part_end(self) -> None:
        self._in_file = False


def _missing_file() -> APIError:
    return APIError(
        422,
        ErrorCode.VALIDATION_ERROR,
        "the request is missing a field or has an invalid value",
        [{"loc": ["body", FIELD], "msg": "Field required", "type": "missing"}],
    )


async def read_upload(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The bytes of the multipart ``file`` part. Raises :class:`APIError` 413 (too large, before it is read), 422
    (not multipart, no file part, two file parts), 408 (the body did not arrive within ``timeout_s``)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise _missing_file()
    if len(params[b"boundary"]) > MAX_BOUNDARY:
        raise APIError(
            400,
            ErrorCode.MALFORMED_BODY,
            f"the multipart boundary is longer than {MAX_BOUNDARY} characters",
            {"max_boundary": MAX_BOUNDARY},
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + ENVELOPE_BYTES:
        raise APIError(413, ErrorCode.FILE_TOO_LARGE, f"uploads are limited to {max_bytes} bytes", {"max_bytes": max_bytes})
    part = _FilePart(max_bytes)
    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": part.on_part_begin,
            "on_header_field": part.on_header_field,
            "on_header_value": part.on_header_value,
            "on_header_end": part.on_header_end,
            "on_headers_finished": part.on_headers_finished,
            "on_part_data": part.on_part_data,
            "on_part_end": part.on_part_end,
        },
    )
    received = 0
    deadline = time.monotonic() + timeout_s
    stream = request.stream().__aiter__()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), left)
            except StopAsyncIteration:
                break
            received += len(chunk)
            if received > max_bytes + ENVELOPE_BYTES:
                raise part._too_large()
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except TimeoutError as exc:
        raise APIError(
            408,
            ErrorCode.REQUEST_TIMEOUT,
            f"the upload did not arrive within {timeout_s:g} s",
            {"timeout_s": timeout_s},
            headers={"Connection": "close"},
        ) from exc
    except ClientDisconnect:
        raise
    except APIError:
        raise
    except Exception as exc:  # noqa: BLE001  (python-multipart's parse errors on a malformed body)
        raise APIError(
            400,
            ErrorCode.MALFORMED_BODY,
            "the multipart body is malformed",
        ) from exc
    if not part.parts:
        raise _missing_file()
    return bytes(part.data)
