"""Row sinks, chosen by the output's extension: ``.csv``, ``.jsonl`` (JSON Lines) or ``.parquet``. Each can say
which photos a previous run already wrote (``--resume``) and appends after them.

Resuming is exact: a cut last line is removed, and so are the rows of the last photo in the file (a stop may have
come between its face rows), so only whole photos count as done; an output written with other columns (``--deltas``
or not) is refused. CSV cells that a spreadsheet would run as a formula (``= + - @``, tab, carriage return) are
written with a leading ``'`` (OWASP's advice on CSV injection) and read back without it.
"""

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


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class OutputMismatch(Exception):
    """The output to resume was written with other columns."""


def columns(deltas: bool) -> list[str]:
    return COLUMNS + (["delta_ages"] if deltas else [])


def csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_value(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell


def _line_rows(path: Path, fmt: str, deltas: bool) -> list[tuple[int, str]]:
    """(end offset, file) of each whole row of a CSV or JSONL output; the file is cut after its last whole line and
    checked against the columns this run writes."""
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(path, "r+b") as fh:  # a line cut by a stop: not a row
            fh.truncate(len(whole))
    rows: list[tuple[int, str]] = []
    offset = 0
    want = columns(deltas)
    for i, line in enumerate(whole.split(b"\n")[:-1]):
        offset += len(line) + 1
        text = line.decode("utf-8")
        if fmt == "csv":
            (cells,) = list(csv.reader([text]))
            if i == 0:
                if cells != want:
                    raise OutputMismatch(f"{path} has columns {cells}, this run writes {want}")
                continue
            rows.append((offset, csv_value(cells[0])))
        else:
            row = json.loads(text)
            if set(row) != set(want):
                raise OutputMismatch(f"{path} has rows with {sorted(row)}, this run writes {sorted(want)}")
            rows.append((offset, row["file"]))
    return rows


def done_files(path: Path, deltas: bool = False) -> set[str]:
    """Photos already in an output file (any row: a face or an error), after making the file end with the last
    photo that is surely whole. Raises :class:`OutputMismatch` for an output with other columns."""
    if not path.exists() or not path.stat().st_size:
        return set()
    fmt = output_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if names != columns(deltas):
            raise OutputMismatch(f"{path} has columns {names}, this run writes {columns(deltas)}")
        return {str(f) for f in pq.read_table(path, columns=["file"]).column("file").to_pylist()}
    rows = _line_rows(path, fmt, deltas)
    if not rows:
        return set()
    last = rows[-1][1]
    keep = [r for r in rows if r[1] != last]  # the last photo's rows may be incomplete: it is done again
    start = keep[-1][0] if keep else (path.read_bytes().find(b"\n") + 1 if fmt == "csv" else 0)
    with open(path, "r+b") as fh:
        fh.truncate(start)
    return {f for _, f in keep}


class CsvWriter:
    def __init__(self, path: Path, deltas: bool, append: bool) -> None:
        fresh = not (append and path.exists() and path.stat().st_size)
        self.fh = open(path, "a" if append else "w", newline="")
        self.columns = columns(deltas)
        self.writer = csv.DictWriter(self.fh, self.columns)
        if fresh:
            self.writer.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if "delta_ages" in row:
                row = {**row, "delta_ages": json.dumps(row["delta_ages"])}
            self.writer.writerow({k: csv_cell(v) for k, v in row.items()})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class JsonlWriter:
    def __init__(self, path: Path, deltas: bool, append: bool) -> None:
        self.fh = open(path, "a" if append else "w")
        self.columns = columns(deltas)

    def write(self, rows: list[dict[str, Any]]) -> None:
        # Every row carries every column (error rows too), so a resumed file can be checked against them.
        self.fh.writelines(json.dumps({c: row.get(c) for c in self.columns}) + "\n" for row in rows)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class ParquetWriter:
    """Streams row groups to a temporary file and renames it at the end (the command closes it on SIGTERM and
    Ctrl-C too, keeping what it finished); on resume the old rows are copied first."""

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
        return JsonlWriter(path, deltas, append)
    return ParquetWriter(path, deltas, append)
