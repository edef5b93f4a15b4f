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
        files = sorted(Path(utkface_dir).glob("*.jpg"))[
            :: max(1, len(list(Path(utkface_dir).glob("*.jpg"))) // utkface_count)
        ][:utkface_count]
        photos["200x200"] = [f.read_bytes() for f in files]
    else:
        # The portrait cropped around the face and scaled to 200 px: a UTKFace-like face photo.
        photos["200x200"] = [_jpeg(astronaut.crop((60, 0, 260, 200)).resize((200, 200)))]
    photos["512x512"] = [_jpeg(astronaut.resize((512, 512), Image.Resampling.LANCZOS))]
    photos["1280x720"] = [_jpeg(group.resize((1280, 720), Image.Resampling.BICUBIC))]
    photos["1920x1080"] = [_jpeg(group.resize((1920, 1080), Image.Resampling.BICUBIC))]
    return photos


GROUP_TILE = (22, 72, 198, 288)  # the largest portrait in group.jpg (640x360), inside its border


def group_photo(faces: int, width: int, height: int) -> bytes:
    """A group photo in group.jpg's style: ``faces`` equal copies of its largest portrait in a row on its grey
    background, drawn at 640x360 and scaled to ``width`` x ``height`` as the 3-face photos are (deterministic)."""
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    tile = group.crop(GROUP_TILE)
    gap = 12
    scale = min(1.0, (group.width - (faces + 1) * gap) / (faces * tile.width))
    tile = tile.resize((round(tile.width * scale), round(tile.height * scale)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", group.size, group.getpixel((5, 5)))
    step = group.width / faces
    for i in range(faces):
        canvas.paste(tile, (round(step * (i + 0.5) - tile.width / 2), (group.height - tile.height) // 2))
    return _jpeg(canvas.resize((width, height), Image.Resampling.BICUBIC))


def group_photos() -> list[bytes]:
    """Group photos of 1280x720 and 1920x1080 with 1, 3 (group.jpg itself, scaled) and 5 faces."""
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    return (
        [group_photo(1, *size) for size in ((1280, 720), (1920, 1080))]
        + [_jpeg(group.resize(size, Image.Resampling.BICUBIC)) for size in ((1280, 720), (1920, 1080))]
        + [group_photo(5, *size) for size in ((1280, 720), (1920, 1080))]
    )
