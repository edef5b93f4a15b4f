"""Upload bytes -> one RGB image, or an :class:`InputError` naming what is wrong. Nothing of the upload is kept.

Untrusted files are checked before they are decoded: the declared canvas against ``max_pixels`` (decompression
bombs), and for PNG the declared image against the data that could hold it (deflate cannot compress more than
1032:1, so a 100-byte file declaring 6300x6300 pixels is missing its rows, which Pillow would silently fill).
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import ErrorCode, InputError

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"}
# The only plugins Pillow may try: a file in another format (EPS, PSD, ...) is refused at its magic bytes, before any
# other parser runs on it (an EPS cost 8.9 s before its 415). The JPEG plugin also opens MPO.
OPEN_FORMATS = ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"]
# PNG: chunks and metadata bytes cost parsing without adding pixels (the probe: 1.3 M empty chunks 7.9 s, 15 MB of
# iCCP 17.7 s, an EXIF of 1.8 M rationals 35.7 s). Photos carry a few chunks and kilobytes of metadata.
MAX_PNG_CHUNKS = 10_000
MAX_PNG_METADATA_BYTES = 1024 * 1024
PNG_PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS"}
# BMP compression 1 and 2 (RLE8, RLE4) are decoded by Pillow in Python row by row, and their skip codes let a 26 KB
# file declare 6324 x 6324 pixels (8.5 s); cameras and phones never write them.
BMP_RLE = {1: "RLE8", 2: "RLE4"}
ACCEPTED = "JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF"
DEFLATE_MAX_RATIO = 1032  # zlib's limit: at most 258 bytes out per 2 bits in
# Pillow keeps a pointer per row of every image it makes, so a 1 x 40,000,000 image costs ~320 MB per copy however
# few pixels it has; no camera or scanner writes a side this long (JPEG and WebP cannot exceed 65,535).
MAX_SIDE = 32_768
# Each scan of a progressive JPEG is another pass over every block: a file of many tiny scans decodes for minutes
# within the upload limit. Encoders write about 10 (libjpeg's progressive script); 100 leaves room.
MAX_JPEG_SCANS = 100
# Marker segments and fill bytes cost the decoder time without adding pixels (an outside probe: 3.9 M empty APP
# segments took 8.6 s, 15 MB of legal 0xFF fill 11.5 s). Cameras write a few dozen segments and no fill runs.
MAX_JPEG_SEGMENTS = 2_000
MAX_JPEG_FILL = 64 * 1024
# A marker inside entropy-coded data: 0xFF (and any fill bytes after it) then a byte that is not a stuffed zero and
# not a restart marker (RST0-7 carry no length and belong to the scan).
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xff\xd0-\xd7])")
PNG_BITS_PER_PIXEL = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel by colour type


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    format: str


def _png_idat_bytes(data: bytes) -> int:
    """Walk a PNG's chunks (before Pillow parses them), refusing too many chunks or too much metadata; returns the
    bytes of image data (IDAT)."""
    idat, metadata, chunks, pos = 0, 0, 0, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks += 1
        if kind == b"IDAT":
            idat += length
        elif kind not in PNG_PIXEL_CHUNKS:
            metadata += length
        if chunks > MAX_PNG_CHUNKS or metadata > MAX_PNG_METADATA_BYTES:
            raise InputError(
                ErrorCode.INVALID_IMAGE,
                f"the PNG has more than {MAX_PNG_CHUNKS} chunks or {MAX_PNG_METADATA_BYTES} bytes of metadata",
                {"max_chunks": MAX_PNG_CHUNKS, "max_metadata_bytes": MAX_PNG_METADATA_BYTES},
            )
        pos += 12 + length
    return idat


def _png_data_too_short(data: bytes, idat: int) -> bool:
    """True when a PNG's ``idat`` bytes of image data are too small to hold the rows its header declares."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return False
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    samples = PNG_BITS_PER_PIXEL.get(colour)
    if samples is None:
        return False
    raw = height * (1 + math.ceil(width * samples * depth / 8))
    return raw > DEFLATE_MAX_RATIO * idat + 1024


def _check_bmp(data: bytes) -> None:
    if len(data) >= 34 and struct.unpack("<I", data[14:18])[0] >= 40:  # BITMAPINFOHEADER or later
        compression = struct.unpack("<I", data[30:34])[0]
        if compression in BMP_RLE:
            raise InputError(
                ErrorCode.UNSUPPORTED_IMAGE_TYPE,
                f"{BMP_RLE[compression]}-compressed BMP is not accepted; send {ACCEPTED} (an uncompressed BMP)",
                {"format": "BMP", "compression": BMP_RLE[compression]},
            )


def _check_tiff(im: Image.Image) -> None:
    """A tile or strip must not hold many times the pixels of the image (a 64 x 64 image stored as one
    32768 x 21840 tile decoded the whole tile: 3 GB)."""
    tags = getattr(im, "tag_v2", {})
    width, height = im.size
    tile = (int(tags.get(322, 0) or 0), int(tags.get(323, 0) or 0))  # TileWidth, TileLength
    strip = (width, min(int(tags.get(278, height) or height), height))  # RowsPerStrip (clamped, as decoders do)
    for w, h in (tile, strip):
        if w * h > 4 * width * height + 65_536:
            raise InputError(
                ErrorCode.INVALID_IMAGE,
                f"the TIFF stores its {width}x{height} image in {w}x{h} blocks, far larger than the image",
                {"width": width, "height": height, "block": [w, h]},
            )


def _jpeg_structure(data: bytes) -> tuple[int, int, int]:
    """Scans, marker segments and the longest run of fill bytes of a JPEG, walking its markers: segments are
    skipped by their lengths (so FF DA bytes in a comment or an APP payload are not scans), entropy-coded data is
    searched for the next marker. Stops counting past the limits."""
    pos, scans, segments, fill, n = 2, 0, 0, 0, len(data)
    while pos + 4 <= n and segments <= MAX_JPEG_SEGMENTS and fill <= MAX_JPEG_FILL:
        if data[pos] != 0xFF:
            found = _JPEG_MARKER.search(data, pos)  # garbage or entropy-coded data before the next marker
            if found is None:
                break
            fill = max(fill, found.end(0) - found.start(0) - 2)
            pos = found.start(1) - 1
            continue
        code = data[pos + 1]
        segments += 1
        if code == 0xD9:  # EOI
            break
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # TEM, RSTn: no length
            pos += 2
            continue
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if code == 0xDA:  # start of scan: its header, then entropy-coded data up to the next marker
            scans += 1
            found = _JPEG_MARKER.search(data, end)
            if found is None:
                break
            fill = max(fill, found.end(0) - found.start(0) - 2)
            pos = found.start(1) - 1
            continue
        pos = end
    return scans, segments, fill


def _check_jpeg(data: bytes) -> None:
    scans, segments, fill = _jpeg_structure(data)
    if scans > MAX_JPEG_SCANS:
        raise InputError(
            ErrorCode.INVALID_IMAGE, f"the JPEG has more than {MAX_JPEG_SCANS} scans", {"max_scans": MAX_JPEG_SCANS}
        )
    if segments > MAX_JPEG_SEGMENTS:
        raise InputError(
            ErrorCode.INVALID_IMAGE,
            f"the JPEG has more than {MAX_JPEG_SEGMENTS} marker segments",
            {"max_segments": MAX_JPEG_SEGMENTS},
        )
    if fill > MAX_JPEG_FILL:
        raise InputError(
            ErrorCode.INVALID_IMAGE,
            f"the JPEG has a run of more than {MAX_JPEG_FILL} fill bytes",
            {"max_fill_bytes": MAX_JPEG_FILL},
        )


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: Pillow's RGB conversion clips at 255, so rescale to 8 bits first.
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        # Transparent pixels on white, pasted in place (no second full-size RGBA canvas).
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    if not data:
        raise InputError(ErrorCode.EMPTY_FILE, "the uploaded file is empty")
    # Structures that cost parsing without adding pixels are checked before Pillow parses them.
    if data[:3] == b"\xff\xd8\xff":
        _check_jpeg(data)
    idat = _png_idat_bytes(data) if data[:8] == b"\x89PNG\r\n\x1a\n" else 0
    if data[:2] == b"BM":
        _check_bmp(data)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check uses a process-wide limit; ours is max_pixels, checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InputError(ErrorCode.IMAGE_TOO_LARGE, "the image has too many pixels", {"max_pixels": max_pixels}) from exc
    except UnidentifiedImageError as exc:
        raise InputError(
            ErrorCode.UNSUPPORTED_IMAGE_TYPE, f"not an image, or not one this service reads ({ACCEPTED})"
        ) from exc
    except Exception as exc:  # noqa: BLE001  (any decoder failure on untrusted bytes is the client's bad file)
        raise InputError(ErrorCode.INVALID_IMAGE, "the image could not be read") from exc
    fmt = (im.format or "").upper()
    if fmt not in ALLOWED_FORMATS:
        raise InputError(
            ErrorCode.UNSUPPORTED_IMAGE_TYPE,
            f"{fmt or 'this'} images are not accepted; send {ACCEPTED}",
            {"format": fmt or None},
        )
    width, height = im.size
    if width < 1 or height < 1:
        raise InputError(ErrorCode.INVALID_IMAGE, "the image has no pixels")
    if max(width, height) > MAX_SIDE:
        raise InputError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{width}x{height}: a side is over the limit of {MAX_SIDE} pixels",
            {"width": width, "height": height, "max_side": MAX_SIDE},
        )
    if width * height > max_pixels:
        raise InputError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{width}x{height} exceeds the limit of {max_pixels} pixels",
            {"width": width, "height": height, "max_pixels": max_pixels},
        )
    if fmt == "TIFF":
        _check_tiff(im)
    if fmt == "PNG" and _png_data_too_short(data, idat):
        raise InputError(
            ErrorCode.TRUNCATED_IMAGE,
            f"the file is too small to hold the {width}x{height} image it declares: its data is truncated",
            {"width": width, "height": height, "bytes": len(data)},
        )
    try:
        im.seek(0)  # animated GIF/WebP/TIFF: the first frame
        im.load()
        rgb = _to_rgb(ImageOps.exif_transpose(im))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        truncated = "truncated" in str(exc).lower() or isinstance(exc, (EOFError, SyntaxError))
        raise InputError(
            ErrorCode.TRUNCATED_IMAGE if truncated else ErrorCode.INVALID_IMAGE,
            "the image data is truncated" if truncated else "the image data is corrupt",
        ) from exc
    return DecodedImage(rgb, fmt)
