"""Upload bytes -> one RGB image, or a precise 4xx. Nothing of the upload is kept or logged."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import APIError

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"}
ACCEPTED = "JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF"


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    format: str


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: Pillow's RGB conversion clips at 255, so rescale to 8 bits first.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    if not data:
        raise APIError(400, "empty_file", "the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise APIError(413, "image_too_large", "the image has too many pixels",
                       {"max_pixels": max_pixels}) from exc
    except UnidentifiedImageError as exc:
        raise APIError(415, "unsupported_image_type", f"not an image, or not one this service reads ({ACCEPTED})") from exc
    except Exception as exc:  # noqa: BLE001  (any decoder failure on untrusted bytes is the client's bad file)
        raise APIError(400, "invalid_image", "the image could not be read", type(exc).__name__) from exc
    fmt = (im.format or "").upper()
    if fmt not in ALLOWED_FORMATS:
        raise APIError(415, "unsupported_image_type", f"{fmt or 'this'} images are not accepted; send {ACCEPTED}",
                       {"format": fmt or None})
    width, height = im.size
    if width < 1 or height < 1:
        raise APIError(400, "invalid_image", "the image has no pixels")
    if width * height > max_pixels:
        raise APIError(413, "image_too_large", f"{width}x{height} exceeds the limit of {max_pixels} pixels",
                       {"width": width, "height": height, "max_pixels": max_pixels})
    try:
        im.seek(0)  # animated GIF/WebP/TIFF: the first frame
        im.load()
        im = ImageOps.exif_transpose(im)
        rgb = _to_rgb(im)
    except Exception as exc:  # noqa: BLE001
        truncated = "truncated" in str(exc).lower() or isinstance(exc, (EOFError, SyntaxError))
        raise APIError(400, "truncated_image" if truncated else "invalid_image",
                       "the image data is truncated" if truncated else "the image data is corrupt",
                       type(exc).__name__) from exc
    return DecodedImage(rgb, fmt)
