"""Gather faces from concurrent requests into one model call.

Requests put their crops on a queue; a single worker takes the first waiting request, keeps collecting for up to
``max_wait`` seconds or until ``max_batch`` faces, and runs the model once per reference interval in the batch on
a dedicated thread, so the event loop never blocks on the model. The queue is bounded in faces; a full queue is
reported to the caller (the route answers 503 with Retry-After) instead of growing without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


class QueueFull(Exception):
    """More faces are waiting than the configured limit."""


class BatchFailed(Exception):
    """The model call that held this request's faces raised; only that batch's requests see it."""


@dataclass
class _Item:
    crops: np.ndarray
    interval: int
    future: asyncio.Future = field(repr=False)


RunFn = Callable[[np.ndarray, int], Sequence[Any]]


class MicroBatcher:
    # At max_wait_s 0 a lone request never waits, and faces that queue while the model is busy go in its next
    # call together. app/settings.py takes its defaults from here.
    DEFAULTS: ClassVar[dict[str, Any]] = {"max_batch": 32, "max_wait_s": 0.0, "max_queue": 256}

    def __init__(
        self,
        run: RunFn,
        max_batch: int = DEFAULTS["max_batch"],
        max_wait_s: float = DEFAULTS["max_wait_s"],
        max_queue: int = DEFAULTS["max_queue"],
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._pending = 0
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daa-model")

    @property
    def pending_faces(self) -> int:
        return self._pending

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._worker(), name="daa-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, crops: np.ndarray, interval: int) -> list[Any]:
        if len(crops) == 0:
            return []
        if self._queue is None:
            raise RuntimeError("batcher not started")
        if self._pending + len(crops) > self.max_queue:
            raise QueueFull(f"{self._pending} faces already waiting (limit {self.max_queue})")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending += len(crops)
        self._queue.put_nowait(_Item(crops, interval, future))
        return await future

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        faces = len(batch[0].crops)
        deadline = time.monotonic() + self.max_wait_s
        while faces < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            batch.append(item)
            faces += len(item.crops)
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            try:
                by_interval: dict[int, list[_Item]] = {}
                for item in batch:
                    if not item.future.done():  # a client that went away needs no answer
                        by_interval.setdefault(item.interval, []).append(item)
                for interval, items in by_interval.items():
                    await self._run_items(loop, interval, items)
            finally:
                self._pending -= sum(len(i.crops) for i in batch)

    async def _run_items(self, loop: asyncio.AbstractEventLoop, interval: int, items: list[_Item]) -> None:
        crops = np.concatenate([i.crops for i in items])
        results: list[Any] = []
        try:
            for start in range(0, len(crops), self.max_batch):  # one request may carry more faces than a batch
                chunk = crops[start : start + self.max_batch]
                t0 = time.perf_counter()
                results.extend(await loop.run_in_executor(self._executor, self._run, chunk, interval))
                if self._on_batch:
                    self._on_batch(len(chunk), time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001  (the failure belongs to these requests only)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(BatchFailed(f"{type(exc).__name__}: {exc}"))
            return
        offset = 0
        for item in items:
            n = len(item.crops)
            if not item.future.done():
                item.future.set_result(results[offset : offset + n])
            offset += n
