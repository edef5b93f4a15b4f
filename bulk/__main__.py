"""``daa-age-bulk INPUT... --out FILE`` (or ``python -m bulk``): age-annotate photos without a server.

INPUT: image files, folders (recursive) and text files listing paths, in any mix. FILE's extension picks the
format: ``.csv``, ``.jsonl`` or ``.parquet``. One row per face (file, face index, box, detection score, age,
uncertainty, age range; with ``--deltas`` the delta ages); every other entry (not an image, no face, not a regular
file, a link loop, over the size limit, a name that is not UTF-8) gets one row with its code, and the run goes
on. The model, detector and settings are the service's (``DAA_*`` variables, ``--checkpoint`` overrides
``DAA_CHECKPOINT``). Locally it uses one worker process per core; ``--ray ADDRESS`` runs the same job as a Ray Data
pipeline (``local`` starts a local Ray cluster). Exit status 1 only when no photo could be read at all; 130 when
stopped (SIGTERM or Ctrl-C), with the finished rows kept.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bulk.inputs import decodable, display_name, expand
from bulk.rows import AnnotatorConfig, error_row
from bulk.writers import OutputMismatch, done_files, open_writer, output_format
from model.errors import ErrorCode, RowCode

UNREADABLE = {
    RowCode.FILE_NOT_READABLE.value,
    RowCode.NOT_REGULAR_FILE.value,
    RowCode.SYMLINK_LOOP.value,
    RowCode.NAME_NOT_DECODABLE.value,
    ErrorCode.FILE_TOO_LARGE.value,
    ErrorCode.INVALID_IMAGE.value,
    ErrorCode.UNSUPPORTED_IMAGE_TYPE.value,
    ErrorCode.EMPTY_FILE.value,
    ErrorCode.TRUNCATED_IMAGE.value,
    ErrorCode.IMAGE_TOO_LARGE.value,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="daa-age-bulk",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("inputs", nargs="+", help="photos and clips, folders, or text files listing paths")
    p.add_argument("--out", type=Path, required=True, help="output: .csv, .jsonl or .parquet")
    p.add_argument("--deltas", action="store_true", help="include the 100 delta ages of every face")
    p.add_argument("--resume", action="store_true", help="skip photos already in --out and append after them")
    p.add_argument("--workers", type=int, default=None, help="worker processes or Ray actors (default: cores)")
    p.add_argument("--batch", type=int, default=16, help="photos per model call (their faces are batched)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on Ray: 'local' starts a local cluster, or an address")
    p.add_argument("--checkpoint", type=Path, help="checkpoint (default: the service's DAA_CHECKPOINT)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def annotator_config(args: argparse.Namespace) -> AnnotatorConfig:
    from app.settings import Settings  # the service's settings: same defaults, same DAA_* variables

    s = Settings()
    device = "cpu" if s.device == "auto" else s.device  # bulk runs scale out over CPU processes
    return AnnotatorConfig(
        str(args.checkpoint or s.checkpoint),
        device,
        s.runtime,
        s.flip_tta,
        s.detector_settings(),
        s.pipeline_limits(),
        args.deltas,
        s.max_upload_bytes,
        s.max_video_bytes,
        s.video_limits(),
    )


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def chunked(paths: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(paths), size):
        yield paths[i : i + size]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        output_format(args.out)
    except ValueError as exc:
        print(f"daa-age-bulk: {exc}", file=sys.stderr)
        return 2
    paths = list(expand(args.inputs))
    if args.resume:
        try:
            done = done_files(args.out, args.deltas)
        except OutputMismatch as exc:
            print(f"daa-age-bulk: cannot resume: {exc} (use the same --deltas, or another --out)", file=sys.stderr)
            return 2
        paths = [p for p in paths if display_name(p) not in done]
        print(f"resuming: {len(done)} photos already in {args.out}, {len(paths)} to go", file=sys.stderr)
    # Names that are not UTF-8 cannot travel to Ray workers or into the outputs: their rows are written here.
    undecodable = [p for p in paths if not decodable(p)]
    paths = [p for p in paths if decodable(p)]
    cfg = annotator_config(args)
    workers = args.workers or os.cpu_count() or 1
    writer = open_writer(args.out, args.deltas, append=args.resume)
    from tqdm import tqdm

    bar = tqdm(total=len(paths), unit="photo", disable=args.no_progress, file=sys.stderr, smoothing=0.1)
    read = failed = faces = 0
    t0 = time.monotonic()
    # SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: the writer closes, keeping every whole chunk.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        if undecodable:
            writer.write([error_row(p, RowCode.NAME_NOT_DECODABLE, "the file name is not valid UTF-8") for p in undecodable])
            failed += len(undecodable)
        if args.ray:
            from bulk.ray_runner import run_ray

            batches = run_ray(cfg, paths, args.ray, workers, args.batch)
        else:
            from bulk.local import run_local

            batches = run_local(cfg, chunked(paths, args.batch), min(workers, max(1, len(paths))))
        for rows in batches:
            writer.write(rows)
            photos = {r["file"]: r["error"] for r in rows}
            bad = sum(1 for e in photos.values() if e in UNREADABLE)
            failed += bad
            read += len(photos) - bad
            faces += sum(1 for r in rows if r["error"] is None)
            bar.update(len(photos))
    except KeyboardInterrupt:
        print(f"daa-age-bulk: stopped; the rows finished so far are in {args.out} (--resume continues)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        writer.close()
    seconds = time.monotonic() - t0
    print(
        f"{read + failed} photos ({failed} unreadable), {faces} faces in {seconds:.1f} s "
        f"({(read + failed) / max(seconds, 1e-9):.1f} photos/s) -> {args.out}",
        file=sys.stderr,
    )
    return 1 if paths and read == 0 else 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
