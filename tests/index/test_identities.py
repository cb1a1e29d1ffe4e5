from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from heroes.index import DEFAULT_MIN_SIMILARITY, Identities, IdentitySummary, cluster_faces

DIM = 128


def faces(n: int, centres: np.ndarray, rng: np.random.Generator, sigma: float = 0.2):
    """Faces of random identities: cosine ~0.96 within one (over the default), ~0 between."""
    labels = rng.integers(0, len(centres), n)
    x = centres[labels] + sigma / np.sqrt(DIM) * rng.standard_normal((n, DIM))
    return x.astype(np.float32), labels


@pytest.fixture
def centres() -> np.ndarray:
    c = np.random.default_rng(11).standard_normal((22, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def test_clusters_recover_the_true_identities(centres):
    x, labels = faces(600, centres[:20], np.random.default_rng(1))
    refs = [f"f{i}" for i in range(len(x))]
    result = cluster_faces(x, refs, min_faces=1)
    found = [result.identity_of(r) for r in refs]
    assert adjusted_rand_score(labels, found) >= 0.95
    assert len(result) == 20


def test_clustering_is_deterministic_for_a_seed(centres):
    x, _ = faces(300, centres, np.random.default_rng(2))
    refs = [f"f{i}" for i in range(len(x))]
    assert cluster_faces(x, refs).assignment == cluster_faces(x, refs).assignment


def test_identities_smaller_than_min_faces_are_left_out(centres):
    rng = np.random.default_rng(3)
    x, _ = faces(200, centres[:5], rng)
    loner = centres[21] + 0.01 * rng.standard_normal(DIM)
    refs = [f"f{i}" for i in range(len(x))] + ["loner"]
    result = cluster_faces(np.vstack([x, loner]), refs, min_faces=2)
    assert result.identity_of("loner") is None
    assert result.identity_of("f0") is not None


def test_rerun_with_new_faces_keeps_old_ids_and_numbers_new_identities_above_them(centres):
    rng = np.random.default_rng(4)
    x1, _ = faces(400, centres[:18], rng)
    refs1 = [f"a{i}" for i in range(len(x1))]
    first = cluster_faces(x1, refs1, seed=0)
    x2, labels2 = faces(200, centres, rng)
    refs2 = [f"b{i}" for i in range(len(x2))]
    second = cluster_faces(np.vstack([x1, x2]), refs1 + refs2, seed=1, previous=first)
    assert all(second.identity_of(r) == first.identity_of(r) for r in refs1)
    new_ids = {second.identity_of(r) for r, lab in zip(refs2, labels2, strict=True) if lab >= 18}
    assert new_ids and min(new_ids) >= first.next_id
    assert second.next_id == max(second.ids()) + 1


def test_merge_split_and_json_round_trip(centres, tmp_path):
    rng = np.random.default_rng(5)
    x, _ = faces(120, centres[:3], rng)
    refs = [f"f{i}" for i in range(len(x))]
    items = [i // 4 for i in range(len(x))]
    ids = cluster_faces(x, refs, items=items)
    a, b, c = ids.ids()
    kept = ids.merge(a, b)
    assert kept == a and len(ids) == 2
    moved = ids.refs(a)[:3]
    new = ids.split(a, moved)
    assert new == c + 1 and ids.refs(new) == sorted(moved)
    ids.save(tmp_path / "identities.json")
    loaded = Identities.load(tmp_path / "identities.json")
    assert loaded.assignment == ids.assignment and loaded.next_id == ids.next_id
    assert loaded.params["min_similarity"] == DEFAULT_MIN_SIMILARITY == 0.94
    summary = loaded.summary()
    assert sum(s.faces for s in summary) == len(x)
    assert summary[-1] == IdentitySummary(new, 3, len({items[int(r[1:])] for r in moved}))


def test_edits_that_make_no_sense_are_refused(centres):
    x, _ = faces(60, centres[:2], np.random.default_rng(6))
    ids = cluster_faces(x, [f"f{i}" for i in range(len(x))])
    a, b = ids.ids()
    with pytest.raises(ValueError, match="itself"):
        ids.merge(a, a)
    with pytest.raises(KeyError):
        ids.merge(a, 99)
    with pytest.raises(ValueError, match="not in identity"):
        ids.split(a, ids.refs(b)[:1])
    with pytest.raises(ValueError, match="empty"):
        ids.split(a, ids.refs(a))
    with pytest.raises(ValueError, match="unique"):
        cluster_faces(x[:2], ["same", "same"])
