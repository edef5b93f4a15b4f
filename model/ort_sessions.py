"""How every ONNX Runtime session of the project is made (the model, the encoder body, MTCNN's networks, YuNet).
Imports no torch."""

from __future__ import annotations

from typing import Any


def session_options(threads: int) -> Any:
    """``threads`` intra-op threads, one inter-op, and no CPU memory arena: the arena keeps the largest activations
    ever seen resident (MTCNN's P-Net canvas: +150 MiB after a few 1080p photos) for no measurable speed (peer_bench,
    200x200 and 1080p, with and without it). No ``session.set_denormal_as_zero``: ONNX Runtime sets it as
    flush-to-zero on the calling thread and leaves it set, which changes the host's floating-point arithmetic (it
    broke hypothesis in the test process); the weights' denormals are zeroed instead (``model/inference.py``), and it
    measured no faster with the flag (default model, one face, one thread: 9.7 / 8.6 ms with it, 8.4 / 7.9 without)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    return options


def providers_for(device: str) -> list[str]:
    """CUDA first where the device asks for it and this onnxruntime build has it; the CPU always."""
    import onnxruntime as ort

    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
