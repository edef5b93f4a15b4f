"""The one vocabulary of failure codes. The pipeline raises :class:`InputError` with a code; the service maps each
code to an HTTP status (``app/errors.py``) and the bulk command writes it into the row of the photo."""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(str, Enum):
    # The upload
    EMPTY_FILE = "empty_file"
    INVALID_IMAGE = "invalid_image"
    TRUNCATED_IMAGE = "truncated_image"
    UNSUPPORTED_IMAGE_TYPE = "unsupported_image_type"
    FILE_TOO_LARGE = "file_too_large"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TOO_COSTLY = "image_too_costly"  # decoding and searching it took more CPU or memory than a photo may
    # Video uploads
    UNSUPPORTED_VIDEO_TYPE = "unsupported_video_type"
    INVALID_VIDEO = "invalid_video"
    VIDEO_TOO_LONG = "video_too_long"
    VIDEO_TOO_LARGE = "video_too_large"
    # The request
    VALIDATION_ERROR = "validation_error"
    MALFORMED_BODY = "malformed_body"
    MIN_FACE_SIZE_UNSUPPORTED = "min_face_size_unsupported"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    HTTP_ERROR = "http_error"
    CORS_REFUSED = "cors_refused"
    # The service
    OVERLOADED = "overloaded"
    NOT_READY = "not_ready"
    INFERENCE_FAILED = "inference_failed"
    OUT_OF_MEMORY = "out_of_memory"
    INTERNAL_ERROR = "internal_error"


class RowCode(str, Enum):
    """Codes only the bulk command writes, into the row of an input entry that gave no face row. The API never
    answers these (a photo without faces is a 200 with ``faces: []``), so they are not in its schema."""

    FILE_NOT_READABLE = "file_not_readable"
    NOT_REGULAR_FILE = "not_regular_file"
    SYMLINK_LOOP = "symlink_loop"
    NAME_NOT_DECODABLE = "name_not_decodable"
    NO_FACE = "no_face"


class InputError(Exception):
    """The input cannot be served as sent: a code from :class:`ErrorCode`, a sentence, and machine-readable detail."""

    def __init__(self, code: ErrorCode, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


class CheckpointError(RuntimeError):
    """A model file that cannot be served: missing, empty, corrupt or of another format."""

    def __init__(self, path: Any, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"checkpoint {self.path}: {problem}")
