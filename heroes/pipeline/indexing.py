"""The case's search indexes, kept up to date with its store.

``CASE/index/`` holds one FAISS index per kind and model: ``face-MODEL`` and ``scene-MODEL``
(cosine over the ``vectors`` table) and ``pdq`` (Hamming over image PDQ hashes and video keyframe
hashes). ``state.json`` records how far each index has read the store, so a resumed or extended
case adds what is new instead of rebuilding. Rows are only ever appended to an index, so when the
pass changes what it already wrote (a file changed in place and analysed again, results moved to
the first of a set of copies) it calls :func:`mark_stale` first, and the next update rebuilds the
case's indexes from the store; ``rebuild=True`` does the same on request.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from heroes.index import BinaryIndex, FloatIndex, Meta, hashes_from_hex
from heroes.pipeline.matching import quality_hashes
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow, VectorRow
from heroes.vectors import decode_vectors

INDEX_DIR = "index"
STATE_FILE = "state.json"
STALE_FILE = "stale"


def index_root(case_dir: Path) -> Path:
    return Path(case_dir) / INDEX_DIR


def _state(root: Path) -> dict[str, Any]:
    p = root / STATE_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def _save_state(root: Path, state: dict[str, Any]) -> None:
    tmp = root / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(root / STATE_FILE)


def mark_stale(case_dir: Path) -> None:
    """Say that rows the indexes already hold may have changed: the next update rebuilds them.

    Called before the store is changed, so that a crash in between costs a rebuild, never a
    stale index."""
    root = index_root(case_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / STALE_FILE).touch()


def case_name(case_dir: Path) -> str:
    return str(Path(case_dir).resolve())


def update_indexes(
    store: CaseStore, case_dir: Path, *, min_quality: int = 50, rebuild: bool = False
) -> dict[str, int]:
    """Add the vectors and PDQ hashes the indexes have not seen; returns rows added per index."""
    root = index_root(case_dir)
    root.mkdir(parents=True, exist_ok=True)
    stale = root / STALE_FILE
    was_stale = stale.exists()
    rebuild = rebuild or was_stale
    before = _state(root)
    with store.session() as s:
        # two primary-key look-ups: when no row was added since the last update there is
        # nothing to read (what every search of a finished case finds)
        heads = [
            s.execute(select(func.max(VectorRow.id))).scalar() or 0,
            s.execute(select(func.max(ItemRow.id))).scalar() or 0,
        ]
    if not rebuild and before.get("heads") == heads and (root / STATE_FILE).is_file():
        return {}
    state = {} if rebuild else dict(before)
    state["heads"] = heads
    name = case_name(case_dir)
    added: dict[str, int] = {}
    with store.session() as s:
        models = s.execute(select(VectorRow.kind, VectorRow.model).distinct()).all()
    for kind, model in models:
        key = f"{kind}-{model}"
        added[key] = _update_float(store, root / key, key, kind, model, name, state, rebuild)
    added["pdq"] = _update_pdq(store, root / "pdq", name, state, min_quality, rebuild)
    if rebuild:
        for old in root.iterdir():  # indexes of kinds the store no longer has
            if old.is_dir() and old.name not in added:
                shutil.rmtree(old)
    if state != before or not (root / STATE_FILE).is_file():
        _save_state(root, state)  # a search that finds nothing new writes nothing
    if was_stale:
        stale.unlink(missing_ok=True)
    return added


def _update_float(
    store: CaseStore,
    path: Path,
    key: str,
    kind: str,
    model: str,
    name: str,
    state: dict[str, Any],
    rebuild: bool,
) -> int:
    last = int(state.get(key, 0))
    index: FloatIndex | None = None
    if path.exists() and not rebuild and last > 0:
        index = FloatIndex.load(path, mmap=False)
    n = 0
    cols = (
        VectorRow.item_id,
        VectorRow.frame_time,
        VectorRow.bbox,
        VectorRow.ref,
        VectorRow.dim,
        VectorRow.vector,
    )
    only = (VectorRow.kind == kind) & (VectorRow.model == model)
    for rows in store.pages(VectorRow.id, *cols, where=only, after=last):
        dim = int(rows[0].dim)
        if index is None:
            index = FloatIndex(dim)
        vecs = decode_vectors([r.vector for r in rows], dim)
        metas = [
            Meta(name, int(r.item_id), r.frame_time, tuple(r.bbox) if r.bbox else None, r.ref)  # type: ignore[arg-type]
            for r in rows
        ]
        index.add(vecs, metas)
        last = int(rows[-1].id)
        n += len(rows)
    if index is not None and n:
        index.save(path)
    elif rebuild and path.exists():
        shutil.rmtree(path)
    state[key] = last
    return n


def _update_pdq(
    store: CaseStore, path: Path, name: str, state: dict[str, Any], min_quality: int, rebuild: bool
) -> int:
    last = int(state.get("pdq", 0))
    index: BinaryIndex | None = None
    if path.exists() and not rebuild and last > 0:
        index = BinaryIndex.load(path, mmap=False)
    hexes: list[str] = []
    metas: list[Meta] = []
    cols = (ItemRow.pdq, ItemRow.pdq_quality, ItemRow.video, ItemRow.status)
    for rows in store.pages(ItemRow.id, *cols, after=last):
        for item_id, pdq, quality, video, status in rows:
            if status == "duplicate":
                continue
            for time, h in quality_hashes(pdq, quality, video, min_quality):
                hexes.append(h)
                metas.append(Meta(name, int(item_id), frame_time=time))
        last = int(rows[-1][0])
    if hexes:
        if index is None:
            index = BinaryIndex()
        index.add(hashes_from_hex(hexes), metas)
        index.save(path)
    elif rebuild and path.exists():
        shutil.rmtree(path)
    state["pdq"] = last
    return len(hexes)
