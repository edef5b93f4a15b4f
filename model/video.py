"""Upload bytes -> the sampled frames of a video clip, bounded in cost for any clip, or an :class:`InputError`.

Decoding uses PyAV (FFmpeg inside its wheel). What a clip declares is checked before its first frame is decoded:
that it has a video stream (an audio-only file is refused), is no still image in a container (send those to
``/estimate``), uses an allowed codec, and declares a duration and frame size within the limits. What it declares
may be a lie, so the same limits hold again for every decoded frame: its size, its timestamp, and the count of
frames decoded (a clip of thousands of tiny frames costs its decodes, sampled or not).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from model.errors import ErrorCode, InputError

# Codecs of the containers people film and share in (MP4, MOV, MKV, WebM, AVI) and animated GIF / WebP.
ALLOWED_CODECS = {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mjpeg", "gif", "webp"}
ACCEPTED = "MP4, MOV, MKV, WebM or AVI (H.264, HEVC, VP8, VP9, AV1, MPEG-4), or an animated GIF or WebP"
# FFmpeg's demuxers for single images: a photo in a "video" upload goes to /estimate instead.
STILL_IMAGE_FORMATS = {"image2", "image2pipe", "webp_pipe", "gif_pipe"}
# How much FFmpeg may read and analyse to identify the streams (bytes, microseconds).
PROBE_OPTIONS = {"probesize": str(5 * 1024 * 1024), "analyzeduration": str(5_000_000)}


@dataclass(frozen=True)
class VideoLimits:
    """What any one clip may cost. ``fps`` is the default sampling rate, ``max_fps`` the most a caller may ask."""

    max_duration_s: float = 300.0
    max_frame_pixels: int = 3840 * 2160
    max_decoded_frames: int = 20_000
    max_sampled_frames: int = 600
    max_faces: int = 3000  # over all sampled frames: their crops are held until the model has seen them
    max_streams: int = 16
    fps: float = 5.0
    max_fps: float = 30.0


@dataclass
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    duration_s: float | None  # as declared; None when the container does not say
    frame_rate: float | None  # the stream's average frame rate, as declared
    frames_decoded: int = 0
    frames_sampled: int = 0


@dataclass
class VideoFrame:
    t: float  # seconds from the first frame
    image: Image.Image = field(repr=False)


def _refuse(code: ErrorCode, message: str, detail: Any = None) -> InputError:
    return InputError(code, message, detail)


def _too_large(what: str, limit: float, key: str) -> InputError:
    shown = f"{limit:,.0f}" if float(limit).is_integer() else f"{limit:g}"
    return _refuse(ErrorCode.VIDEO_TOO_LARGE, f"the video {what} (the limit is {shown})", {key: limit})


def open_video(data: bytes, limits: VideoLimits) -> tuple[Any, Any, VideoInfo]:
    """Open and check a clip: (container, its video stream, what it declares). Raises :class:`InputError`."""
    import av  # imported here: reading photos never needs FFmpeg

    if not data:
        raise _refuse(ErrorCode.EMPTY_FILE, "the uploaded file is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r", options=PROBE_OPTIONS)
    except av.error.InvalidDataError as exc:
        raise _refuse(ErrorCode.UNSUPPORTED_VIDEO_TYPE, f"not a video, or not one this service reads ({ACCEPTED})") from exc
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _refuse(ErrorCode.INVALID_VIDEO, "the video could not be read") from exc
    try:
        return (container, *_check(container, limits))
    except BaseException:
        container.close()
        raise


def _check(container: Any, limits: VideoLimits) -> tuple[Any, VideoInfo]:
    fmt = container.format.name
    if fmt in STILL_IMAGE_FORMATS or fmt.endswith("_pipe"):
        raise _refuse(
            ErrorCode.UNSUPPORTED_VIDEO_TYPE, "this is a still image: send it to POST /estimate", {"container": fmt}
        )
    if len(container.streams) > limits.max_streams:
        raise _too_large(f"has {len(container.streams)} streams", limits.max_streams, "max_streams")
    if not container.streams.video:
        raise _refuse(ErrorCode.UNSUPPORTED_VIDEO_TYPE, "the file has no video stream (audio only?)", {"container": fmt})
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if codec not in ALLOWED_CODECS:
        raise _refuse(ErrorCode.UNSUPPORTED_VIDEO_TYPE, f"{codec} video is not accepted; send {ACCEPTED}", {"codec": codec})
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width * height > limits.max_frame_pixels:
        raise _too_large(f"frames are {width}x{height} pixels", limits.max_frame_pixels, "max_frame_pixels")
    duration = _declared_duration(container, stream)
    if duration is not None and duration > limits.max_duration_s:
        raise _refuse(
            ErrorCode.VIDEO_TOO_LONG,
            f"the video is {duration:.0f} s long (the limit is {limits.max_duration_s:g} s)",
            {"max_duration_s": limits.max_duration_s, "duration_s": round(duration, 2)},
        )
    rate = float(stream.average_rate) if stream.average_rate else None
    stream.thread_type = "SLICE"  # no frame threads: the decode process's CPU budget is per process anyway
    stream.codec_context.thread_count = 1
    return stream, VideoInfo(fmt, codec, width, height, duration, rate)


def _declared_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def sample_frames(data: bytes, fps: float, limits: VideoLimits) -> tuple[VideoInfo, Iterator[VideoFrame]]:
    """The clip's frames at ``fps`` (the first frame, then one per 1/fps seconds of its timestamps), as RGB
    images. The iterator raises :class:`InputError` as soon as a limit is passed, and closes the clip when it
    ends."""
    if not 0 < fps <= limits.max_fps:
        raise _refuse(
            ErrorCode.VALIDATION_ERROR, f"fps must be over 0 and at most {limits.max_fps:g}", {"max_fps": limits.max_fps}
        )
    container, stream, info = open_video(data, limits)
    return info, _frames(container, stream, info, fps, limits)


def _frames(container: Any, stream: Any, info: VideoInfo, fps: float, limits: VideoLimits) -> Iterator[VideoFrame]:
    import av

    step = 1.0 / fps
    start: float | None = None
    next_t = 0.0
    try:
        try:
            for frame in container.decode(stream):
                info.frames_decoded += 1
                if info.frames_decoded > limits.max_decoded_frames:
                    raise _too_large(
                        f"has more than {limits.max_decoded_frames} frames", limits.max_decoded_frames, "max_decoded_frames"
                    )
                if frame.width * frame.height > limits.max_frame_pixels:
                    raise _too_large(
                        f"has a frame of {frame.width}x{frame.height} pixels", limits.max_frame_pixels, "max_frame_pixels"
                    )
                t_abs = _frame_time(frame, info, stream)
                if start is None:
                    start = t_abs
                t = t_abs - start
                if t > limits.max_duration_s:
                    raise _refuse(
                        ErrorCode.VIDEO_TOO_LONG,
                        f"the video runs past {limits.max_duration_s:g} s",
                        {"max_duration_s": limits.max_duration_s},
                    )
                if t + 1e-6 < next_t:
                    continue
                info.frames_sampled += 1
                if info.frames_sampled > limits.max_sampled_frames:
                    raise _too_large(
                        f"needs more than {limits.max_sampled_frames} frames at {fps:g} fps: ask for a lower fps",
                        limits.max_sampled_frames,
                        "max_sampled_frames",
                    )
                # The next sample time follows the clock, not the frame: a gap in the clip leaves a gap.
                next_t = (math.floor(t / step + 1e-6) + 1) * step
                yield VideoFrame(round(t, 4), frame.to_image())
        except av.error.FFmpegError as exc:
            if info.frames_decoded <= 1:
                raise _refuse(ErrorCode.INVALID_VIDEO, "the video stream could not be decoded") from exc
            # A stream damaged after its start: what was decoded stands (players show it too).
        if info.frames_sampled == 0:
            raise _refuse(ErrorCode.INVALID_VIDEO, "the video holds no frame that could be decoded")
    finally:
        container.close()


def _frame_time(frame: Any, info: VideoInfo, stream: Any) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    rate = info.frame_rate or 25.0
    return (info.frames_decoded - 1) / rate
