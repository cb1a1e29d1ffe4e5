"""One base class for ONNX models: load once (thread-safe), predict on batches, inject for tests."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heroes.models import registry, runtime
from heroes.models.registry import ModelSpec

log = logging.getLogger(__name__)

_OOM_WORDS = ("out of memory", "failed to allocate", "cudaerrormemoryallocation", "bad_alloc")


class OutOfMemory(RuntimeError):
    """A model input does not fit in the device's memory even alone."""


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(w in text for w in _OOM_WORDS)


class OnnxModel:
    """A model described by a manifest and run by ONNX Runtime.

    ``predict`` loads the session on first use; a ready session (e.g. a tiny model built by a
    test) can be injected through ``session=``. Large batches are split into ``max_batch``
    chunks so that memory stays bounded whatever the caller sends.
    """

    max_batch = 64
    #: chunk size on CPU, where large batches only cost cache (None: same as ``max_batch``)
    cpu_max_batch: int | None = None

    def __init__(
        self,
        spec: ModelSpec | str,
        *,
        session: Any = None,
        device: str | None = None,
        threads: int | None = None,
        fp16: bool = False,
    ) -> None:
        self.spec = registry.get_spec(spec) if isinstance(spec, str) else spec
        self._session = session
        self._device = device
        self._threads = threads
        self._fp16 = fp16
        #: outputs bound on the device (CUDA/TensorRT sessions); off after a failed binding
        self._io_binding = False
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return registry.resolve(self.spec)

    def load(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session = runtime.session(
                    registry.resolve(self.spec),
                    device=self._device,
                    threads=self._threads,
                    fp16=self._fp16,
                )
                on_cpu = self._session.get_providers()[0] == "CPUExecutionProvider"
                if on_cpu and self.cpu_max_batch is not None:
                    self.max_batch = min(self.max_batch, self.cpu_max_batch)
                self._io_binding = not on_cpu and hasattr(self._session, "io_binding")
        return self._session

    @property
    def providers(self) -> list[str]:
        return list(self.load().get_providers())

    def run(self, batch: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        """Run the network on a prepared input batch, in chunks of ``max_batch``."""
        sess = self.load()
        if len(batch) == 0:
            return []
        outs: list[list[NDArray[np.float32]]] = []
        for i in range(0, len(batch), self.max_batch):
            outs.extend(self._run_chunk(sess, batch[i : i + self.max_batch]))
        return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]

    def _run_chunk(self, sess: Any, chunk: NDArray[np.float32]) -> list[list[NDArray[np.float32]]]:
        """Run one chunk; when the device runs out of memory, halve it and try again, down to
        single images, and raise :class:`OutOfMemory` only when even one image does not fit."""
        try:
            if self._io_binding:
                return [self._run_bound(sess, np.ascontiguousarray(chunk))]
            return [sess.run(None, {self.spec.input.name: np.ascontiguousarray(chunk)})]
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            if len(chunk) == 1:
                raise OutOfMemory(
                    f"{self.spec.name}: out of memory on a single input: {exc}"
                ) from exc
            half = len(chunk) // 2
            self.max_batch = max(1, half)
            log.warning(
                "%s: out of memory at batch %d, retrying at %d", self.spec.name, len(chunk), half
            )
            return self._run_chunk(sess, chunk[:half]) + self._run_chunk(sess, chunk[half:])

    def _run_bound(self, sess: Any, chunk: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        """One run through ONNX Runtime's IO binding on a GPU session: the input is copied to
        the device once and the outputs are allocated there, then read back together. When the
        binding itself fails (an onnxruntime without it), runs plainly from then on; running
        out of device memory is raised as it is, for the caller to halve the batch."""
        try:
            binding = sess.io_binding()
            binding.bind_cpu_input(self.spec.input.name, chunk)
            for out in sess.get_outputs():
                binding.bind_output(out.name, "cuda")
            sess.run_with_iobinding(binding)
            return list(binding.copy_outputs_to_cpu())
        except Exception as exc:
            if _is_out_of_memory(exc):
                raise
            log.warning("%s: IO binding failed (%s), running plainly", self.spec.name, exc)
            self._io_binding = False
            return list(sess.run(None, {self.spec.input.name: chunk}))

    def normalise(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """[N,H,W,3] RGB uint8 -> [N,3,H,W] float32 as the manifest says (colour, mean, scale)."""
        src = images[..., ::-1] if self.spec.input.colour.upper() == "BGR" else images
        n, h, w, _ = src.shape
        # one pass: the transposed uint8 view is converted straight into the NCHW float buffer
        x = np.empty((n, 3, h, w), dtype=np.float32)
        x[...] = src.transpose(0, 3, 1, 2)
        mean = np.asarray(self.spec.input.mean, dtype=np.float32)
        if mean.any():
            x -= mean.reshape(1, 3, 1, 1)
        if self.spec.input.scale != 1.0:
            x *= np.float32(self.spec.input.scale)
        return x
