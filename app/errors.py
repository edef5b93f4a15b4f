"""One error model for every failure: ``{code, message, detail}`` with the right HTTP status.

Codes come from :class:`model.errors.ErrorCode`; :data:`STATUS` maps each to its HTTP status, so a pipeline error
and a route error read the same to a client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas import ErrorResponse
from model.errors import ErrorCode, InputError

log = logging.getLogger("daa.app")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.EMPTY_FILE: 400,
    ErrorCode.MALFORMED_BODY: 400,
    ErrorCode.INVALID_IMAGE: 400,
    ErrorCode.TRUNCATED_IMAGE: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_IMAGE_TYPE: 415,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.MIN_FACE_SIZE_UNSUPPORTED: 422,
    ErrorCode.IMAGE_TOO_COSTLY: 422,
    ErrorCode.UNSUPPORTED_VIDEO_TYPE: 415,
    ErrorCode.INVALID_VIDEO: 400,
    ErrorCode.VIDEO_TOO_LONG: 413,
    ErrorCode.VIDEO_TOO_LARGE: 413,
    ErrorCode.INFERENCE_FAILED: 500,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.HTTP_ERROR: 400,
    ErrorCode.CORS_REFUSED: 400,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.OUT_OF_MEMORY: 503,
}


class APIError(Exception):
    def __init__(
        self, status: int, code: ErrorCode, message: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail, self.headers = status, code, message, detail, headers

    @classmethod
    def from_input(cls, exc: InputError) -> APIError:
        return cls(STATUS[exc.code], exc.code, exc.message, exc.detail)


def error_response(
    status: int, code: ErrorCode, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(code=code, message=message, detail=detail).model_dump(mode="json")
    return JSONResponse(status_code=status, content=body, headers=headers)


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.detail, exc.headers)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return await _api_error(request, APIError.from_input(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return error_response(
            422, ErrorCode.VALIDATION_ERROR, "the request is missing a field or has an invalid value", detail
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(exc.status_code, ErrorCode.HTTP_ERROR)
        return error_response(exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(MemoryError)
    async def _memory(_: Request, exc: MemoryError) -> JSONResponse:
        # An allocation that failed for one request: the process lives on; the client may retry later.
        log.warning("a request ran out of memory")
        return error_response(
            503,
            ErrorCode.OUT_OF_MEMORY,
            "the server could not allocate memory for this request; retry later or send a smaller image",
            None,
            {"Retry-After": str(retry_after_s)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        # The log has the traceback; the client gets no internals (not even the exception's class).
        return error_response(500, ErrorCode.INTERNAL_ERROR, "unexpected server error")
