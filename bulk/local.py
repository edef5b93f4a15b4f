"""The local runner: one worker process per core, each with its own pipeline (one thread), fed chunks of photos."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from typing import Any

from bulk.rows import AnnotatorConfig, PhotoAnnotator

_annotator: PhotoAnnotator | None = None


def _init(cfg: AnnotatorConfig) -> None:
    global _annotator  # one pipeline per worker process, built once when the process starts
    try:
        import torch
    except ImportError:  # the torch-free install: ONNX Runtime sessions take one thread each already
        pass
    else:
        torch.set_num_threads(1)  # the process is ours: one kernel thread per worker, one worker per core
    _annotator = PhotoAnnotator(cfg)


def _annotate(paths: list[str]) -> list[dict[str, Any]]:
    assert _annotator is not None
    return _annotator.annotate(paths)


def run_local(cfg: AnnotatorConfig, chunks: Iterator[list[str]], workers: int) -> Iterator[list[dict[str, Any]]]:
    """Rows per chunk, in input order."""
    if workers <= 1:
        _init(cfg)
        for chunk in chunks:
            yield _annotate(chunk)
        return
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(cfg,)) as pool:
        yield from pool.imap(_annotate, chunks)
