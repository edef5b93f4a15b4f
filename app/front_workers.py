"""The pipeline's front half (multipart envelope, decode, detect, crop) in worker processes with hard limits.

The decode budgets in ``model/imaging.py`` refuse the hostile files we know by their declared geometry and
chunk counts; this is the bound for the ones nobody has thought of yet. Each photo runs in a worker process that
the kernel stops when the photo has used ``cpu_s`` seconds of CPU (``ITIMER_PROF``: CPU time of the process, not
wall time, so a busy machine does not trip it) or tries to map more than ``memory_bytes`` beyond the worker's
idle size (``RLIMIT_AS``: the allocation fails, the worker answers and is replaced). A worker that trips, hangs
past the wall-clock backstop, or whose client hangs up is killed and a fresh one started; the server process
never runs the decoder, so one photo can neither stall the event loop nor take the server's memory with it.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from PIL import Image

from app.multipart import Upload, parse_upload
from model.config import CropSpec
from model.detection import DetectorSettings, create_detector
from model.errors import ErrorCode, InputError
from model.options import PipelineLimits, PipelineOptions, WorkerLimits
from model.pipeline import ClientGone, FrontHalf, Prepared, PreparedVideo
from model.video import VideoLimits

log = logging.getLogger("daa.app")
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FrontSpec:
    """What a worker builds its front half from (picklable: it crosses into the new process)."""

    detector: DetectorSettings
    crop: CropSpec
    limits: PipelineLimits
    runtime: str = "auto"
    threads: int = 1


def build_front(spec: FrontSpec) -> FrontHalf:
    detector = create_detector(spec.detector, device="cpu", runtime=spec.runtime, threads=spec.threads)
    return FrontHalf(detector, spec.crop, spec.limits)


def run_front(front: FrontHalf, upload: Upload | bytes, options: PipelineOptions) -> Prepared:
    """The multipart envelope (when ``upload`` is one), then decode, detect and crop: where the worker runs it,
    and what the server runs in a thread when isolation is off."""
    data = parse_upload(upload) if isinstance(upload, Upload) else upload
    return front.prepare(data, options)


def run_front_video(
    front: FrontHalf, upload: Upload | bytes, options: PipelineOptions, fps: float, limits: VideoLimits
) -> PreparedVideo:
    """The same for a clip: its sampled frames' faces and crops."""
    data = parse_upload(upload) if isinstance(upload, Upload) else upload
    return front.prepare_video(data, options, fps, limits)


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _serve(conn: Connection, spec: FrontSpec, memory_bytes: int) -> None:
    """The worker process: build the front half, warm it up, set the limits, then answer photos until told to
    stop. Replies: ("ok", Prepared) | ("input", code, message, detail) | ("memory",) | ("error", text)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a worker the kernel stops leaves no core file behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops its workers
    front = build_front(spec)
    # Run the detector once at its largest input so its buffers are part of the idle size the limit adds to.
    side = spec.detector.max_side
    front.detector.detect(Image.new("RGB", (side, side), (128, 128, 128)), spec.limits.min_face_size)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + memory_bytes, hard))
    try:
        conn.send(("ready", os.getpid()))
    except OSError:  # the server stopped while this worker started
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        kind, upload, options, extra, cpu_s = message
        reply: tuple[Any, ...]
        # SIGPROF's default action ends the process: the kernel enforces the budget even inside C code.
        signal.setitimer(signal.ITIMER_PROF, cpu_s)
        try:
            if kind == "video":
                reply = ("ok", run_front_video(front, upload, options, *extra))
            else:
                reply = ("ok", run_front(front, upload, options))
        except InputError as exc:
            reply = ("input", exc.code.value, exc.message, exc.detail)
        except MemoryError:
            reply = ("memory",)
        except Exception as exc:  # noqa: BLE001  (a decoder's own bug: reported, and the worker carries on)
            reply = ("error", f"{type(exc).__name__}: {exc}")
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        del upload
        conn.send(reply)
        if reply[0] == "memory":
            return  # after a failed allocation, start clean


class FrontWorker:
    """One decode process (``python -m app.front_workers FD``, so it imports only what decoding needs, not the
    server) and its end of a socket pair."""

    def __init__(self, spec: FrontSpec, limits: WorkerLimits) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.front_workers", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        self.conn = Connection(ours.detach())
        self.conn.send((spec, limits.memory_bytes))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        if not self.conn.poll(timeout_s):
            self.kill()
            raise RuntimeError(f"a decode process did not start within {timeout_s:g} s")
        try:
            self.conn.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise RuntimeError(f"a decode process failed to start (exit code {self.exitcode})") from exc

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            log.error("decode process %d did not exit after SIGKILL", self.process.pid)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.process.wait(2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class _Stopped(Exception):
    """A worker that had to be stopped: why (for the metric), and the error its photo gets."""

    def __init__(self, reason: str, error: Exception) -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


def too_costly(what: str, detail: dict[str, Any]) -> InputError:
    return InputError(
        ErrorCode.IMAGE_TOO_COSTLY, f"the upload needed more than {what} to decode and search for faces", detail
    )


class FrontWorkers:
    """``size`` worker processes; :meth:`prepare` is called from the server's prepare threads (as many as there
    are workers), each taking an idle worker for one photo."""

    def __init__(
        self,
        spec: FrontSpec,
        size: int,
        limits: WorkerLimits | None = None,
        on_replace: Callable[[str], None] | None = None,
    ) -> None:
        """``on_replace(reason)``: called when a worker is killed: cpu, memory, wall, client_gone or crashed."""
        self.spec, self.size, self.limits, self.on_replace = spec, size, limits or WorkerLimits(), on_replace
        self._idle: queue.Queue[FrontWorker] = queue.Queue()
        self._closed = False
        workers = [FrontWorker(spec, self.limits) for _ in range(size)]  # started together
        try:
            for w in workers:
                w.wait_ready()
        except Exception:
            for w in workers:
                w.kill()
            raise
        for w in workers:
            self._idle.put(w)

    def pids(self) -> list[int]:
        return [w.pid for w in list(self._idle.queue)]

    def prepare(self, upload: Upload | bytes, options: PipelineOptions, cancel: threading.Event) -> Prepared:
        prepared: Prepared = self._run(("photo", upload, options, ()), self.limits.cpu_s, cancel)
        return prepared

    def prepare_video(
        self, upload: Upload | bytes, options: PipelineOptions, fps: float, limits: VideoLimits, cancel: threading.Event
    ) -> PreparedVideo:
        prepared: PreparedVideo = self._run(("video", upload, options, (fps, limits)), self.limits.video_cpu_s, cancel)
        return prepared

    def _run(self, job: tuple[Any, ...], cpu_s: float, cancel: threading.Event) -> Any:
        worker = self._idle.get()
        reason: str | None = None
        try:
            reply = self._ask(worker, job, cpu_s, cancel)
            if reply[0] == "memory":
                reason = "memory"
        except _Stopped as stopped:
            reason = stopped.reason
            raise stopped.error from None
        finally:
            if reason is None:
                self._idle.put(worker)
            else:
                self._replace(worker, reason)
        return self._answer(reply)

    def _ask(self, worker: FrontWorker, job: tuple[Any, ...], cpu_s: float, cancel: threading.Event) -> tuple[Any, ...]:
        wall_s = self.limits.wall_s(cpu_s)
        worker.conn.send((*job, cpu_s))
        deadline = time.monotonic() + wall_s
        while not worker.conn.poll(0.05):
            if cancel.is_set():
                raise _Stopped("client_gone", ClientGone("the client went away while its upload was decoded"))
            if time.monotonic() > deadline:
                raise _Stopped("wall", too_costly(f"{wall_s:g} s", {"wall_s": wall_s}))
        try:
            reply: tuple[Any, ...] = worker.conn.recv()
            return reply
        except (EOFError, OSError):
            try:
                code = worker.process.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            if code == -signal.SIGPROF:
                raise _Stopped("cpu", too_costly(f"{cpu_s:g} s of CPU", {"cpu_s": cpu_s})) from None
            if code == -signal.SIGKILL:  # the kernel's out-of-memory killer
                raise _Stopped("memory", self._memory()) from None
            error = InputError(ErrorCode.INTERNAL_ERROR, "the decode worker stopped", {"exit_code": code})
            raise _Stopped("crashed", error) from None

    def _memory(self) -> InputError:
        mb = self.limits.memory_bytes // (1024 * 1024)
        return too_costly(f"{mb} MiB of memory", {"memory_mb": mb})

    def _answer(self, reply: tuple[Any, ...]) -> Any:
        kind = reply[0]
        if kind == "ok":
            return reply[1]
        if kind == "input":
            raise InputError(ErrorCode(reply[1]), reply[2], reply[3])
        if kind == "memory":
            raise self._memory()
        log.error("the decode worker failed on a photo: %s", reply[1])
        raise InputError(ErrorCode.INTERNAL_ERROR, "decoding the photo failed")

    def _replace(self, worker: FrontWorker, reason: str) -> None:
        """Kill ``worker`` now and start its successor in the background; until it is ready, photos wait for the
        other workers (or for it)."""
        worker.kill()
        if self.on_replace is not None:
            self.on_replace(reason)

        def start() -> None:
            delay = 0.5
            while not self._closed:
                try:
                    fresh = FrontWorker(self.spec, self.limits)
                    fresh.wait_ready()
                except Exception as exc:  # noqa: BLE001  (keep trying: the pool must not shrink for good)
                    log.error("could not start a decode worker: %s; retrying in %.1f s", exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                if self._closed:
                    fresh.stop()
                else:
                    self._idle.put(fresh)
                return

        threading.Thread(target=start, name="daa-front-start", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return


def main() -> None:
    """The decode process: ``python -m app.front_workers FD`` (FD: its end of the socket pair)."""
    conn = Connection(int(sys.argv[1]))
    spec, memory_bytes = conn.recv()
    _serve(conn, spec, memory_bytes)


if __name__ == "__main__":
    main()
