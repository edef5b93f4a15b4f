"""Which entries a bulk run reads: any mix of image files, folders (searched recursively, links not followed into
folders) and text files that list paths (one per line, relative to the list's folder), and how each is read.

Every entry gets a row: an entry that cannot be read as a photo (a dangling link, a link loop, a FIFO, a device, a
folder named ``x.jpg``, a file over the size limit, a name that is not valid UTF-8) is one error row, never a
silent skip, and nothing here blocks on a special file or reads past the size limit.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from model.errors import ErrorCode, RowCode

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"} | VIDEO_SUFFIXES
LIST_SUFFIXES = {".txt", ".lst", ".list"}


def is_video(path: str) -> bool:
    """A clip (one row per tracked face) rather than a photo, by its suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def display_name(path: str) -> str:
    """The path as a row shows it: valid UTF-8 with undecodable bytes as ``\\xNN`` and control characters escaped,
    so every output format can hold it and one row stays one line."""
    raw = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in raw)


def decodable(path: str) -> bool:
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def expand(inputs: Iterable[str | Path]) -> Iterator[str]:
    """Every entry, in a stable order (folders sorted), each once (``a/../a/x.jpg`` is ``a/x.jpg``)."""
    seen: set[str] = set()

    def emit(path: str) -> Iterator[str]:
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            yield os.path.normpath(path)

    for item in inputs:
        path = os.fspath(item)
        if os.path.isdir(path):
            found = []
            for folder, dirs, files in os.walk(path, followlinks=False):
                dirs.sort()
                names = files + [d for d in dirs if Path(d).suffix.lower() in IMAGE_SUFFIXES]  # "x.jpg/" gets its row
                found += [os.path.join(folder, n) for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
            for child in sorted(found):
                yield from emit(child)
        elif Path(path).suffix.lower() in LIST_SUFFIXES and os.path.isfile(path):
            with open(path, "rb") as fh:
                text = os.fsdecode(fh.read(64 * 1024 * 1024))  # bytes as the file system's names (surrogateescape)
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    listed = line if os.path.isabs(line) else os.path.join(os.path.dirname(path), line)
                    yield from emit(listed)
        else:  # a photo, or a path that is not there: the run reports it in its row
            yield from emit(path)


class Unreadable(Exception):
    """An entry that cannot be read as a photo: a row code and a sentence."""

    def __init__(self, code: ErrorCode | RowCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def read_photo(path: str, max_bytes: int) -> bytes:
    """The file's bytes, at most ``max_bytes``; raises :class:`Unreadable` for anything but a readable regular
    file within the limit. Opened non-blocking, so a FIFO swapped in after the check cannot hang the run."""
    if not decodable(path):
        raise Unreadable(RowCode.NAME_NOT_DECODABLE, "the file name is not valid UTF-8")
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable(RowCode.SYMLINK_LOOP, "a loop of symbolic links") from exc
        raise Unreadable(RowCode.FILE_NOT_READABLE, f"cannot read the file: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
        raise Unreadable(RowCode.NOT_REGULAR_FILE, f"not a regular file: {kind}")
    if info.st_size > max_bytes:
        raise Unreadable(ErrorCode.FILE_TOO_LARGE, f"{info.st_size} bytes: over the limit of {max_bytes}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise Unreadable(RowCode.FILE_NOT_READABLE, f"cannot read the file: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unreadable(RowCode.NOT_REGULAR_FILE, "not a regular file")
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise Unreadable(RowCode.FILE_NOT_READABLE, f"cannot read the file: {exc.strerror}") from exc
    if len(data) > max_bytes:  # it grew since the check
        raise Unreadable(ErrorCode.FILE_TOO_LARGE, f"over the limit of {max_bytes} bytes")
    return data
