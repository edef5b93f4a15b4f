"""Benchmark photos of several sizes, made from the committed public-domain fixtures (no data download)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def benchmark_photos(utkface_dir: Path | None = None, utkface_count: int = 20) -> dict[str, list[bytes]]:
    """JPEG bytes by size label: 200x200 portraits (UTKFace chips when a folder is given), 512x512, 1280x720 and
    1920x1080 group photos."""
    astronaut = Image.open(FIXTURES / "astronaut.jpg").convert("RGB")
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    photos: dict[str, list[bytes]] = {}
    if utkface_dir is not None:
        files = sorted(Path(utkface_dir).glob("*.jpg"))[:: max(1, len(list(Path(utkface_dir).glob("*.jpg")))
                                                              // utkface_count)][:utkface_count]
        photos["200x200"] = [f.read_bytes() for f in files]
    else:
        # The portrait cropped around the face and scaled to 200 px: a UTKFace-like face photo.
        photos["200x200"] = [_jpeg(astronaut.crop((60, 0, 260, 200)).resize((200, 200)))]
    photos["512x512"] = [_jpeg(astronaut.resize((512, 512), Image.LANCZOS))]
    photos["1280x720"] = [_jpeg(group.resize((1280, 720), Image.BICUBIC))]
    photos["1920x1080"] = [_jpeg(group.resize((1920, 1080), Image.BICUBIC))]
    return photos
