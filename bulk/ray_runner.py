"""The bulk job as a Ray Data pipeline: photo paths -> an actor pool of annotators (each reads, decodes, detects
and crops a batch of photos, then runs the model once for all their faces) -> rows, streamed back in input order.
On a laptop ``--ray local`` starts a local cluster; on VMs or Kubernetes (KubeRay) the same job scales by adding
nodes (the photos' paths must be readable from every node, e.g. a shared file system)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from bulk.rows import AnnotatorConfig, PhotoAnnotator


class _Annotate:
    """One Ray actor: a pipeline loaded once, called on batches of paths."""

    def __init__(self, cfg: AnnotatorConfig) -> None:
        try:
            import torch
        except ImportError:  # the torch-free install
            pass
        else:
            torch.set_num_threads(1)  # the actor's process is Ray's worker, one CPU each
        self.annotator = PhotoAnnotator(cfg)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        rows = self.annotator.annotate([str(p) for p in batch["path"]])
        # Rows travel as JSON text: faces and error rows have different columns, which Arrow blocks dislike.
        return {"row": [json.dumps(r) for r in rows]}


def run_ray(
    cfg: AnnotatorConfig, paths: list[str], address: str, workers: int, batch: int
) -> Iterator[list[dict[str, Any]]]:
    try:
        import ray
    except ImportError as exc:
        raise SystemExit('--ray needs Ray: pip install -e ".[ray]"') from exc
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in input order, like the local runner
        ctx.enable_progress_bars = False  # the command's own bar counts photos
        blocks = min(max(1, len(paths)), max(workers, -(-len(paths) // batch)))  # enough for every actor
        ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
        annotated = ds.map_batches(
            _Annotate, fn_constructor_args=(cfg,), batch_size=batch, concurrency=workers, num_cpus=1, batch_format="numpy"
        )
        for out in annotated.iter_batches(batch_size=None, batch_format="numpy"):  # whole blocks: whole photos
            yield [json.loads(r) for r in out["row"]]
    finally:
        if started:
            ray.shutdown()
