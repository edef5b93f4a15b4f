"""Which photos a bulk run reads: any mix of image files, folders (searched recursively) and text files that
list paths (one per line, relative to the list's folder)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}


def expand(inputs: Iterable[str | Path]) -> Iterator[str]:
    """Every photo path, in a stable order (folders sorted), each once."""
    seen: set[str] = set()

    def emit(path: Path) -> Iterator[str]:
        key = str(path)
        if key not in seen:
            seen.add(key)
            yield key

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                yield from emit(child)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    listed = Path(line)
                    yield from emit(listed if listed.is_absolute() else path.parent / listed)
        else:  # a photo, or a path that is not there: the run reports it in its row
            yield from emit(path)
