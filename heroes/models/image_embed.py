"""Whole-image embedding by any ONNX encoder described by a manifest (CLIP-, DINOv2-style).

The image is resized as the manifest says (``centre_crop``: short side to the input size, then the
centre square; ``stretch``: straight to the input size), normalised by the manifest's mean and
scale, and the output is L2-normalised so that cosine similarity is a dot product.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from heroes.models.base import OnnxModel


def centre_crop(image: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    h, w = image.shape[:2]
    r = size / min(h, w)
    nh, nw = max(size, round(h * r)), max(size, round(w * r))
    resized = cv2.resize(
        image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_CUBIC
    )
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top : top + size, left : left + size]


class ImageEmbedder(OnnxModel):
    max_batch = 64

    def __init__(self, spec: Any, **kw: Any) -> None:
        super().__init__(spec, **kw)
        self.size = int(self.spec.input.size[0])

    @property
    def dim(self) -> int:
        return int(self.spec.output.dim or 0)

    def prepare(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = image[..., :3]
        if self.spec.input.resize == "stretch":
            return cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return centre_crop(image, self.size)

    def embed(self, images: list[NDArray[np.uint8]]) -> NDArray[np.float32]:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = self.normalise(np.stack([self.prepare(im) for im in images]))
        (out,) = self.run(batch)[:1]
        out = out.reshape(len(images), -1).astype(np.float32)
        return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
