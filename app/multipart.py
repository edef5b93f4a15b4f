"""The multipart envelope of an upload, parsed for its one ``file`` part: pure CPU work on bytes already
received, so it runs where the photo is decoded (a decode process, ``app/front_workers.py``), not on the event
loop. Needs python-multipart only; errors are :class:`model.errors.InputError` (their codes map to 400, 413 and
422)."""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

from model.errors import ErrorCode, InputError

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

    def _too_large(self) -> InputError:
        limit = self.max_bytes
        return InputError(ErrorCode.FILE_TOO_LARGE, f"uploads are limited to {limit} bytes", {"max_bytes": limit})

    def on_part_begin(self) -> None:
        self._name, self._in_file, self._header_bytes = None, False, 0
        self.all_parts += 1
        if self.all_parts > MAX_PARTS:
            raise InputError(ErrorCode.MALFORMED_BODY, f"the body has more than {MAX_PARTS} parts", {"max_parts": MAX_PARTS})

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise InputError(
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
                raise InputError(
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


def missing_file() -> InputError:
    return InputError(
        ErrorCode.VALIDATION_ERROR,
        "the request is missing a field or has an invalid value",
        [{"loc": ["body", FIELD], "msg": "Field required", "type": "missing"}],
    )


@dataclass(frozen=True)
class Upload:
    """A request body as received, not parsed yet: the multipart envelope is parsed where the photo is decoded
    (:func:`parse_upload`, off the event loop)."""

    body: bytes
    boundary: bytes
    max_bytes: int


def parse_upload(upload: Upload) -> bytes:
    """The bytes of the multipart ``file`` part. Raises :class:`APIError` 413 (too large), 422 (no file part, two
    file parts), 400 (malformed, too many parts, part headers too long). CPU-bound: runs where the photo is
    decoded, not on the event loop."""
    part = _FilePart(upload.max_bytes)
    parser = MultipartParser(
        upload.boundary,
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
    try:
        parser.write(upload.body)
        parser.finalize()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (python-multipart's parse errors on a malformed body)
        raise InputError(ErrorCode.MALFORMED_BODY, "the multipart body is malformed") from exc
    if not part.parts:
        raise missing_file()
    return bytes(part.data)
