"""Every ONNX Runtime choice in one place: providers, threads, session reuse.

Nothing here reads the environment: the device, the threads and the TensorRT cache come from the
one :class:`heroes.config.Settings` object, passed down by the pass (``InferOptions``).

Providers are the preferred order TensorRT > CUDA > CPU intersected with what the installed
onnxruntime offers (``onnxruntime-gpu`` brings the first two). On CPU, intra-op threads default to
the cores this process may use divided by the number of worker processes, so several workers do
not oversubscribe the machine. Sessions are created once per process and model and reused.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_sessions: dict[tuple[str, str, int, bool], Any] = {}
_lock = threading.Lock()


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def choose_providers(device: str | None = None) -> list[str]:
    """The providers to use: ``device`` 'cpu' forces CPU; 'cuda'/'tensorrt' require them."""
    have = set(available_providers())
    if device == "cpu":
        return ["CPUExecutionProvider"]
    order = [p for p in PREFERRED if p in have]
    if device == "cuda":
        order = [p for p in order if p != "TensorrtExecutionProvider"]
    if device in ("cuda", "tensorrt") and order[0] == "CPUExecutionProvider":
        raise RuntimeError(f"{device} requested but onnxruntime offers only {sorted(have)}")
    return order or ["CPUExecutionProvider"]


_trt_cache: str | None = None


def set_trt_cache(path: str | Path | None) -> None:
    """Where TensorRT keeps built engines (the ``trt_cache`` setting); None turns the cache off."""
    global _trt_cache
    _trt_cache = str(path) if path else None


def runs_on_cpu(device: str | None = None) -> bool:
    """Whether a session for ``device`` runs on the CPU: ``device`` is 'cpu', or it names none
    and onnxruntime offers no GPU provider. Same rule as :func:`session`."""
    if device in ("cuda", "tensorrt"):
        return False
    return choose_providers(device)[0] == "CPUExecutionProvider"


def cpu_threads() -> int:
    """Intra-op threads for one session on CPU when none are given: the cores it may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores)


def limit_native_threads(n: int) -> None:
    """OpenCV's and FAISS's own thread pools to ``n`` threads in this process, as its ONNX Runtime
    sessions: a pass runs one worker per core, and pools sized for every core in each worker
    only contend (FAISS's OpenMP threads spin after each call)."""
    import cv2
    import faiss

    cv2.setNumThreads(n)
    faiss.omp_set_num_threads(n)


def provider_options(providers: list[str], fp16: bool) -> list[tuple[str, dict[str, Any]] | str]:
    out: list[tuple[str, dict[str, Any]] | str] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            opts: dict[str, Any] = {"trt_fp16_enable": fp16}
            if _trt_cache:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=_trt_cache)
            out.append((p, opts))
        elif p == "CUDAExecutionProvider":
            out.append((p, {"cudnn_conv_algo_search": "HEURISTIC"}))
        else:
            out.append(p)
    return out


def session(
    path: Path, *, device: str | None = None, threads: int | None = None, fp16: bool = False
) -> Any:
    """A cached ``InferenceSession`` for a model file; created once per process and settings."""
    import onnxruntime as ort

    providers = choose_providers(device)
    n = threads or cpu_threads()
    key = (str(path), ",".join(providers), n, fp16)
    with _lock:
        sess = _sessions.get(key)
        if sess is None:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            if providers[0] == "CPUExecutionProvider":
                so.intra_op_num_threads = n
                so.inter_op_num_threads = 1
                so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                # batches vary in size (files per batch, faces per batch): a memory pattern is
                # planned and kept per input shape, which only grows the process; no speed lost
                so.enable_mem_pattern = False
            sess = ort.InferenceSession(
                str(path), sess_options=so, providers=provider_options(providers, fp16)
            )
            log.info("model %s on %s (threads %d)", path.name, sess.get_providers()[0], n)
            _sessions[key] = sess
    return sess


def clear_sessions() -> None:
    with _lock:
        _sessions.clear()
