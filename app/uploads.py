"""The upload: received as it streams, held in memory only, then parsed for its ``file`` part.

Starlette's form parser writes any part over 1 MB to a temporary file and reads the whole body before a route can
check its size. :func:`receive_upload` refuses a body over the limit as soon as the declared length or the bytes
received pass it (nothing is written anywhere) and gives up on a body that stalls or trickles;
:func:`app.multipart.parse_upload` takes the one ``file`` part out of it where the photo is decoded, so a body
built to cost parser callbacks costs them off the event loop (and inside the decode process's CPU limit).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.errors import APIError
from app.multipart import ENVELOPE_BYTES, MAX_BOUNDARY, Upload, missing_file
from model.errors import ErrorCode


def check_upload_head(request: Request, max_bytes: int) -> tuple[bytes, int | None]:
    """The body's boundary and declared length, from the head alone. Raises :class:`APIError` 422 (not
    multipart), 400 (boundary too long), 413 (declared too large)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise APIError.from_input(missing_file())
    if len(params[b"boundary"]) > MAX_BOUNDARY:
        raise APIError(
            400,
            ErrorCode.MALFORMED_BODY,
            f"the multipart boundary is longer than {MAX_BOUNDARY} characters",
            {"max_boundary": MAX_BOUNDARY},
        )
    text = request.headers.get("content-length")
    declared = int(text) if text and text.isdigit() else None
    if declared is not None and declared > max_bytes + ENVELOPE_BYTES:
        raise APIError(413, ErrorCode.FILE_TOO_LARGE, f"uploads are limited to {max_bytes} bytes", {"max_bytes": max_bytes})
    return params[b"boundary"], declared


async def receive_upload(
    request: Request, boundary: bytes, max_bytes: int, timeout_s: float, min_rate: float = 0.0, grace_s: float = 2.0
) -> Upload:
    """The whole body (``boundary``: :func:`check_upload_head`'s), held in memory, refused as soon as it passes
    ``max_bytes`` plus the envelope. Raises
    :class:`APIError` 408 when it has not arrived within ``timeout_s``, or when after ``grace_s`` it arrives at
    less than ``min_rate`` bytes per second on average (a slow body holds its connection only so long)."""
    body = bytearray()
    start = time.monotonic()
    deadline = start + timeout_s
    stream = request.stream().__aiter__()
    pending: asyncio.Future[bytes | None] | None = None
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise _timeout(f"the upload did not arrive within {timeout_s:g} s", {"timeout_s": timeout_s})
            if min_rate and now - start > grace_s and len(body) < min_rate * (now - start):
                raise _timeout(f"the upload arrived at under {min_rate:g} bytes/s", {"min_rate_bytes_per_s": min_rate})
            if pending is None:
                pending = asyncio.ensure_future(_next_chunk(stream))
            # Wake at least once a second, so the deadline and the rate floor hold while no byte arrives.
            done, _ = await asyncio.wait({pending}, timeout=min(deadline - now, 1.0))
            if not done:
                continue
            chunk, pending = pending.result(), None
            if chunk is None:
                break
            body += chunk
            if len(body) > max_bytes + ENVELOPE_BYTES:
                raise APIError(
                    413, ErrorCode.FILE_TOO_LARGE, f"uploads are limited to {max_bytes} bytes", {"max_bytes": max_bytes}
                )
    finally:
        if pending is not None:
            pending.cancel()
    return Upload(bytes(body), boundary, max_bytes)


async def _next_chunk(stream: Any) -> bytes | None:
    try:
        chunk: bytes = await stream.__anext__()
        return chunk
    except StopAsyncIteration:
        return None


def _timeout(message: str, detail: dict[str, float]) -> APIError:
    return APIError(408, ErrorCode.REQUEST_TIMEOUT, message, detail, headers={"Connection": "close"})


async def drain_upload(request: Request, max_bytes: int, timeout_s: float) -> None:
    """Read and drop up to ``max_bytes`` of a body that will not be served, for at most ``timeout_s``, so the
    client, still sending, reads the refusal instead of a connection reset."""
    received = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes:
                    return
    except (TimeoutError, ClientDisconnect):
        return
