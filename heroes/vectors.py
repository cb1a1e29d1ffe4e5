"""How embeddings are stored (``vectors.vector`` in the case store): little-endian float32.

Kept apart from :mod:`heroes.store` so that worker processes, which only encode, do not import the
database layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

VECTOR_DTYPE = "<f4"


def encode_vector(vector: NDArray[np.floating]) -> bytes:
    """An embedding as stored in ``vectors.vector``: little-endian float32."""
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def decode_vectors(blobs: Sequence[bytes], dim: int) -> NDArray[np.float32]:
    """Stored embeddings back to a [N, dim] float32 matrix."""
    return np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).reshape(len(blobs), dim)
