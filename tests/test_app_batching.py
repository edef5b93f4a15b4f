"""Faces from concurrent requests share model calls; a full queue answers 503; a failing batch fails only itself."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from app.batching import BatchFailed, MicroBatcher, QueueFull
from app.settings import Settings
from model.detectors.mtcnn import MTCNNDetector
from model.estimator import Estimator
from model.faces import crop_face
from testkit import DEFAULT_NETWORK, FIXTURES, fixture_bytes, make_client, post_image


@pytest.fixture(scope="module")
def estimator() -> Estimator:
    return Estimator(str(DEFAULT_NETWORK), "cpu", flip_tta=False)


@pytest.fixture(scope="module")
def crops(estimator: Estimator) -> np.ndarray:
    image = Image.open(FIXTURES / "group.jpg").convert("RGB")
    # The crops the served model reads (its own crop spec), as the service makes them.
    return np.stack([crop_face(image, d, estimator.crop_spec) for d in MTCNNDetector().detect(image)])


def test_concurrent_submissions_share_one_model_call(estimator, crops):
    async def scenario():
        calls = []

        def run(x, interval):
            calls.append(len(x))
            return estimator.estimate(x, interval)

        batcher = MicroBatcher(run, max_batch=32, max_wait_s=0.5)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(crops[i % 3 : i % 3 + 1], 1) for i in range(8)))
        await batcher.stop()
        return calls, results

    calls, results = asyncio.run(scenario())
    assert calls == [8]  # 8 requests, one model call
    alone = estimator.estimate(crops, 1)
    for i, res in enumerate(results):  # each request got its own face's answer back
        assert len(res) == 1 and res[0].age == pytest.approx(alone[i % 3].age, abs=1e-3)


def test_without_waiting_faces_queued_behind_a_busy_model_share_its_next_call():
    import time

    sizes = []

    def run(x, interval):
        sizes.append(len(x))
        time.sleep(0.2)  # the model is busy; later requests queue meanwhile
        return [None] * len(x)

    async def scenario():
        batcher = MicroBatcher(run, max_batch=32, max_wait_s=0.0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 4, 4, 3), np.uint8), 1))
        await asyncio.sleep(0.05)  # the first face is already in the model, alone (nobody waited for company)
        rest = [batcher.submit(np.zeros((1, 4, 4, 3), np.uint8), 1) for _ in range(5)]
        await asyncio.gather(first, *rest)
        await batcher.stop()

    asyncio.run(scenario())
    assert sizes == [1, 5]


def test_batches_respect_max_batch_and_split_by_interval(estimator, crops):
    seen = []

    def run(x, interval):
        seen.append((len(x), interval))
        return estimator.estimate(x, interval)

    async def scenario():
        batcher = MicroBatcher(run, max_batch=4, max_wait_s=0.2)
        await batcher.start()
        out = await asyncio.gather(batcher.submit(np.concatenate([crops, crops]), 1), batcher.submit(crops[:1], 10))
        await batcher.stop()
        return out

    a, b = asyncio.run(scenario())
    assert len(a) == 6 and len(b) == 1 and len(b[0].deltas) == 10
    assert all(n <= 4 for n, _ in seen) and {i for _, i in seen} == {1, 10}


def model_calls(client) -> float:
    """Model calls so far, as the service's own Prometheus metrics count them."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("daa_model_batch_faces_count"):
            return float(line.split()[-1])
    raise AssertionError("no daa_model_batch_faces_count in /metrics")


def test_http_concurrent_requests_use_fewer_model_calls():
    n = 8
    with make_client(max_wait_ms=300, max_batch_size=32, flip_tta=False) as c:
        data = fixture_bytes("astronaut.jpg")
        post_image(c, data)  # warm-up
        before = model_calls(c)
        with ThreadPoolExecutor(n) as pool:
            responses = list(pool.map(lambda _: post_image(c, data), range(n)))
        calls = model_calls(c) - before
    assert all(r.status_code == 200 and len(r.json()["faces"]) == 1 for r in responses)
    ages = {round(r.json()["faces"][0]["age"], 3) for r in responses}
    assert len(ages) == 1  # batching does not change the answer
    assert calls < n, f"{n} requests took {calls} model calls"


def test_settings_refuse_a_queue_smaller_than_one_photo():
    with pytest.raises(ValueError, match="DAA_MAX_QUEUE"):
        Settings(max_queue=2, max_faces=20)


def test_full_queue_answers_503_with_retry_after():
    with make_client(max_queue=3, max_faces=3, retry_after_s=7) as c:
        service = c.app.state.service
        real = service.batcher._run
        gate = threading.Event()

        def blocked(x, interval):
            gate.wait(30)
            return real(x, interval)

        service.batcher._run = blocked
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post_image, c, fixture_bytes("group.jpg"))  # its 3 faces fill the queue
            deadline = time.monotonic() + 30
            while service.batcher.pending_faces < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            r = post_image(c, fixture_bytes("astronaut.jpg"))
            gate.set()
            assert first.result().status_code == 200
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert r.json()["code"] == "overloaded"
        assert post_image(c, fixture_bytes("astronaut.jpg")).status_code == 200


def test_queue_full_is_raised_by_the_batcher(crops):
    async def scenario():
        batcher = MicroBatcher(lambda x, k: [None] * len(x), max_batch=8, max_wait_s=0.01, max_queue=2)
        await batcher.start()
        try:
            with pytest.raises(QueueFull):
                await batcher.submit(crops, 1)
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_failing_batch_fails_only_its_requests():
    with make_client(flip_tta=False) as c:
        service = c.app.state.service
        real = service.batcher._run
        state = {"fail": True}

        def flaky(x, interval):
            if state.pop("fail", False):
                raise RuntimeError("simulated device error")
            return real(x, interval)

        service.batcher._run = flaky
        r = post_image(c, fixture_bytes("astronaut.jpg"))
        assert r.status_code == 500 and r.json()["code"] == "inference_failed"
        assert r.json()["detail"] is None and "simulated" not in r.text  # the log has it, the client no internals
        r = post_image(c, fixture_bytes("astronaut.jpg"))
        assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_batch_failed_reaches_every_request_of_the_batch(crops):
    async def scenario():
        def boom(x, k):
            raise ValueError("bad batch")

        batcher = MicroBatcher(boom, max_batch=8, max_wait_s=0.2)
        await batcher.start()
        out = await asyncio.gather(batcher.submit(crops[:1], 1), batcher.submit(crops[1:2], 1), return_exceptions=True)
        await batcher.stop()
        return out

    assert all(isinstance(r, BatchFailed) for r in asyncio.run(scenario()))
