"""Row sinks, chosen by the output's extension: ``.csv``, ``.jsonl`` (JSON Lines) or ``.parquet``. Each can say
which photos a previous run already wrote (``--resume``) and appends after them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Protocol

from bulk.rows import COLUMNS

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


class RowWriter(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: the output's extension picks the format: one of {', '.join(FORMATS)}")
    return fmt


def done_files(path: Path) -> set[str]:
    """Photos already in an output file (any row: a face or an error)."""
    if not path.exists():
        return set()
    fmt = output_format(path)
    if fmt == "csv":
        with open(path, newline="") as fh:
            return {row["file"] for row in csv.DictReader(fh)}
    if fmt == "jsonl":
        with open(path) as fh:
            return {json.loads(line)["file"] for line in fh if line.strip()}
    import pyarrow.parquet as pq

    return {str(f) for f in pq.read_table(path, columns=["file"]).column("file").to_pylist()}


class CsvWriter:
    def __init__(self, path: Path, deltas: bool, append: bool) -> None:
        fresh = not (append and path.exists() and path.stat().st_size)
        self.fh = open(path, "a" if append else "w", newline="")
        self.columns = COLUMNS + (["delta_ages"] if deltas else [])
        self.writer = csv.DictWriter(self.fh, self.columns)
        if fresh:
            self.writer.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if "delta_ages" in row:
                row = {**row, "delta_ages": json.dumps(row["delta_ages"])}
            self.writer.writerow(row)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class JsonlWriter:
    def __init__(self, path: Path, append: bool) -> None:
        self.fh = open(path, "a" if append else "w")

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.fh.writelines(json.dumps(row) + "\n" for row in rows)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class ParquetWriter:
    """Streams row groups to a temporary file and renames it at the end; on resume the old rows are copied first."""

    def __init__(self, path: Path, deltas: bool, append: bool) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SystemExit("Parquet output needs pyarrow: pip install pyarrow (or the [ray] extra)") from exc
        self.pa, self.path = pa, path
        fields = [pa.field("file", pa.string()), pa.field("face", pa.int32())]
        fields += [pa.field(c, pa.float64()) for c in COLUMNS if c not in ("file", "face", "error", "message")]
        fields += [pa.field("error", pa.string()), pa.field("message", pa.string())]
        if deltas:
            fields.append(pa.field("delta_ages", pa.list_(pa.float32())))
        self.schema = pa.schema(fields)
        self.tmp = path.with_name(path.name + ".tmp")
        self.writer = pq.ParquetWriter(self.tmp, self.schema)
        if append and path.exists():
            self.writer.write_table(pq.read_table(path).cast(self.schema))

    def write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.writer.write_table(self.pa.Table.from_pylist(rows, schema=self.schema))

    def close(self) -> None:
        self.writer.close()
        self.tmp.replace(self.path)


def open_writer(path: Path, deltas: bool, append: bool) -> RowWriter:
    fmt = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return CsvWriter(path, deltas, append)
    if fmt == "jsonl":
        return JsonlWriter(path, append)
    return ParquetWriter(path, deltas, append)
