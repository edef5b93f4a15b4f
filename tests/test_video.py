"""POST /estimate/video on real decoded clips made from the fixture photos: tracks, fused ages, the per-frame
option, and a precise error for every class of clip it refuses."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from testkit import encode_clip, fixture_faces, make_client, moving_faces


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with make_client() as c:
        yield c


def post_clip(client: Any, data: bytes, name: str = "clip.mp4", **params: Any) -> Any:
    return client.post("/estimate/video", files={"file": (name, data, "video/mp4")}, params=params)


def test_one_face_is_one_track_with_a_steady_fused_age(client):
    face = fixture_faces()[0]
    r = post_clip(client, encode_clip(moving_faces([face], seconds=3), fps=30), include_frames=True)
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["fps"] == 5 and body["video"]["frames_decoded"] == 90 and body["video"]["frames_sampled"] == 15
    (track,) = body["tracks"]
    assert track["frames"] == 15 and track["start_s"] == 0 and 2.7 < track["end_s"] < 3.0
    frames = track["frame_estimates"]
    ages = [f["age"] for f in frames]
    # The fused age lies among the frames' ages, and its range contains it.
    assert min(ages) <= track["age"] <= max(ages)
    assert track["age_range"]["low"] <= track["age"] <= track["age_range"]["high"]
    assert [f["t"] for f in frames] == sorted(f["t"] for f in frames)
    assert all(f["box"]["x2"] > f["box"]["x1"] for f in frames)
    # The running fused age moves less from frame to frame than the frames' own ages do.
    assert np.std(np.diff([f["track_age"] for f in frames])) <= np.std(np.diff(ages)) + 1e-9


def test_two_faces_crossing_keep_their_identities(client):
    a, b = fixture_faces()[:2]
    clip = encode_clip(moving_faces([a, b], size=(800, 400), seconds=3, face_side=140, crossing=True), fps=30)
    body = post_clip(client, clip, include_frames=True).json()
    tracks = [t for t in body["tracks"] if t["frames"] >= 3]
    assert len(tracks) == 2, [(t["id"], t["frames"]) for t in body["tracks"]]
    for t in tracks:
        xs = [(f["box"]["x1"] + f["box"]["x2"]) / 2 for f in t["frame_estimates"]]
        # Each track moves one way across the frame all along: no swap where the faces meet.
        steps = np.sign(np.diff(xs))
        assert abs(steps.sum()) >= len(steps) - 2, xs


def test_frames_are_left_out_unless_asked(client):
    clip = encode_clip(moving_faces(fixture_faces()[:1], seconds=1), fps=30)
    body = post_clip(client, clip).json()
    assert body["tracks"] and "frame_estimates" not in body["tracks"][0]


def test_fps_sets_the_sampling_and_has_a_limit(client):
    clip = encode_clip(moving_faces(fixture_faces()[:1], seconds=2), fps=30)
    assert post_clip(client, clip, fps=2).json()["video"]["frames_sampled"] == 4
    r = post_clip(client, clip, fps=60)
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")


def test_webm_and_animated_gif_are_read(client):
    frames = list(moving_faces(fixture_faces()[:1], size=(320, 240), seconds=1, fps=10, face_side=120))
    for codec, fmt in (("libvpx-vp9", "webm"), ("gif", "gif")):
        r = post_clip(client, encode_clip(frames, fps=10, codec=codec, fmt=fmt), name=f"c.{fmt}")
        assert r.status_code == 200, (fmt, r.text[:200])
        assert r.json()["video"]["frames_sampled"] == 5


def _audio_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 44100
        for i in range(20):
            frame.pts = i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def _hours_long() -> bytes:
    """Three tiny frames whose timestamps span two hours: a few KB that declare a long clip."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 64), (i * 80, 0, 0)))
            frame.pts = i * 3600
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    return buf.getvalue()


def _corrupt() -> bytes:
    """A valid MP4 whose samples are zeros: the container and its index survive, the stream does not."""
    clip = bytearray(encode_clip(moving_faces(fixture_faces()[:1], seconds=1), fps=30))
    start, end = clip.find(b"mdat") + 4, clip.find(b"moov") - 4
    clip[start:end] = bytes(end - start)
    return bytes(clip)


REFUSED = {
    # name: (bytes, status, code)
    "8K frames declared": (lambda: encode_clip([Image.new("RGB", (7680, 4320))], fps=1), 413, "video_too_large"),
    "30,000 tiny frames": (
        lambda: encode_clip((Image.new("RGB", (16, 16), (i % 256, 0, 0)) for i in range(30_000)), fps=1000),
        413,
        "video_too_large",
    ),
    "two hours declared in 3 frames": (_hours_long, 413, "video_too_long"),
    "audio only": (_audio_only, 415, "unsupported_video_type"),
    "a still image": (_png, 415, "unsupported_video_type"),
    "text": (lambda: b"hello, world " * 100, 415, "unsupported_video_type"),
    "empty": (lambda: b"", 400, "empty_file"),
    "corrupt stream": (_corrupt, 400, "invalid_video"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_clips_it_cannot_serve_get_a_precise_error(client, name):
    make, status, code = REFUSED[name]
    r = post_clip(client, make())
    assert (r.status_code, r.json().get("code")) == (status, code), (name, r.text[:300])
    assert r.json()["message"]


def test_a_clip_damaged_after_its_start_serves_what_decodes(client):
    clip = bytearray(encode_clip(moving_faces(fixture_faces()[:1], seconds=2), fps=30))
    middle = (clip.find(b"mdat") + clip.find(b"moov")) // 2
    clip[middle : middle + 3000] = bytes(3000)
    r = post_clip(client, bytes(clip))
    assert r.status_code == 200 and 0 < r.json()["video"]["frames_sampled"] < 10


def test_the_service_keeps_serving_after_refusals(client):
    clip = encode_clip(moving_faces(fixture_faces()[:1], seconds=1), fps=30)
    assert post_clip(client, clip).status_code == 200
