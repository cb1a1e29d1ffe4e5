"""FAISS indexes for faces, scenes and PDQ hashes, with their id maps.

The bottom layer of heroes: vectors in, rows and their :class:`Meta` out. It imports nothing from
the pipeline, models, store or search layers.

* :class:`FloatIndex`: cosine over L2-normalised float32 (faces, scenes); flat, then IVF or HNSW.
* :class:`BinaryIndex`: Hamming over packed hashes (PDQ), exact, with dihedral-variant merging.
* :func:`search_many` / :class:`ShardedSearcher`: one search over several cases' indexes.
* :func:`cluster_faces` / :class:`Identities`: faces grouped into identities with stable ids.
"""

from heroes.index.base import Hit, VectorIndex
from heroes.index.binary_index import (
    PDQ_BITS,
    PDQ_MATCH_RADIUS,
    BinaryIndex,
    BinaryIndexParams,
    hashes_from_hex,
    hashes_to_hex,
)
from heroes.index.float_index import (
    FloatIndex,
    FloatIndexParams,
    choose_float_index_type,
    choose_nlist,
)
from heroes.index.identities import (
    DEFAULT_MIN_SIMILARITY,
    Identities,
    IdentitySummary,
    cluster_faces,
)
from heroes.index.idmap import IdMap, Meta
from heroes.index.multi import ShardedSearcher, load_index, range_search_many, search_many

__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "PDQ_BITS",
    "PDQ_MATCH_RADIUS",
    "BinaryIndex",
    "BinaryIndexParams",
    "FloatIndex",
    "FloatIndexParams",
    "Hit",
    "IdMap",
    "Identities",
    "IdentitySummary",
    "Meta",
    "ShardedSearcher",
    "VectorIndex",
    "choose_float_index_type",
    "choose_nlist",
    "cluster_faces",
    "hashes_from_hex",
    "hashes_to_hex",
    "load_index",
    "range_search_many",
    "search_many",
]
