"""Calibrate the identity threshold of ``heroes persons`` on labelled public face photos.

A folder of photos of adults with a ``labels.csv`` (``file``, ``people``: who is in the photo,
left to right, ``;``-separated) is triaged by the real pass (``heroes triage``: detector,
5-point landmarks, aligned chips, dlib face ResNet), then:

- pairs: the cosine of every two labelled faces, same person or not; per threshold the
  false-merge rate (different people at or above it) and the split rate (same person below);
- persons: ``heroes persons --min-similarity T`` on the case, per threshold the clusters, the
  clusters holding more than one person, purity (share of clustered faces that belong to their
  cluster's main person) and the people split over several clusters; and the same faces
  clustered in shuffled orders (the pass stores faces in the order files finish);
- low resolution: each one-person photo shrunk until its face is a few dozen pixels wide, run
  through the pass's models again and compared with the person's other photos.

The people named in a photo are its largest faces, matched left to right; any other face (a
bystander) is left out of the pairs and counts as a person of its own in the clusters. Faces the
human-face check did not confirm are left out of both, as ``persons`` leaves them out.

    python benchmarks/bench_face_pairs.py --faces tests/data/faces
    # the calibration set: 74 photos of 19 adults, copied from checkouts of the two repositories
    python benchmarks/bench_face_pairs.py --faces CALIB_DIR --name face_pairs_calibration \
        --assemble serengil/deepface=DEEPFACE_CHECKOUT ageitgey/face_recognition=FR_CHECKOUT

Checkouts at the commits named in tests/data/faces/SOURCE.md give the published numbers.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_result
from numpy.typing import NDArray
from sqlalchemy import select

from heroes.config import get_settings
from heroes.index.identities import DEFAULT_MIN_SIMILARITY, Identities, cluster_faces
from heroes.pipeline.indexing import index_root
from heroes.search import IDENTITIES_FILE, persons
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow, VectorRow
from heroes.vectors import decode_vectors


@dataclass(frozen=True)
class Face:
    ref: str
    path: str
    person: str | None  # None: a bystander nobody labelled
    confirmed: bool
    vector: NDArray[np.float32]


CALIBRATION = Path(__file__).parent / "face_pairs_calibration.csv"


def assemble(out: Path, checkouts: dict[str, Path], listing: Path = CALIBRATION) -> None:
    """Copy the listed photos out of repository checkouts into ``out``, with its labels.csv."""
    out.mkdir(parents=True, exist_ok=True)
    with listing.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if r["repo"] not in checkouts:
            raise SystemExit(f"no checkout of {r['repo']} given (--assemble {r['repo']}=DIR)")
        (out / r["file"]).write_bytes((checkouts[r["repo"]] / r["path"]).read_bytes())
    (out / "labels.csv").write_bytes(listing.read_bytes())


def read_labels(folder: Path) -> dict[str, list[str]]:
    with (folder / "labels.csv").open(newline="") as f:
        return {r["file"]: r["people"].split(";") for r in csv.DictReader(f)}


def triage(folder: Path, case: Path) -> None:
    """The real pass, as a user runs it (local engine: a few dozen photos)."""
    cmd = [sys.executable, "-m", "heroes.cli", "triage", str(folder), "--case", str(case)]
    cmd += ["--engine", "local", "--no-progress", "--json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ))


def case_faces(case: Path, labels: dict[str, list[str]]) -> list[Face]:
    """Every face the pass stored, with the person its photo's label gives it."""
    settings = get_settings()
    store = CaseStore(case, settings.db_url, create=False)
    try:
        with store.session() as s:
            items = {
                int(i): (p, fs or [])
                for i, p, fs in s.execute(select(ItemRow.id, ItemRow.path, ItemRow.faces)).all()
            }
            rows = s.execute(
                select(VectorRow.ref, VectorRow.item_id, VectorRow.bbox, VectorRow.vector)
                .where(VectorRow.kind == "face", VectorRow.model == settings.face_model)
                .order_by(VectorRow.id)
            ).all()
    finally:
        store.close()
    confirmed = {
        str(f.get("face_id")): f.get("confirmed") is not False
        for _, fs in items.values()
        for f in fs
        if isinstance(f, dict)
    }
    by_item: dict[int, list[Any]] = defaultdict(list)
    for r in rows:
        by_item[int(r.item_id)].append(r)
    faces: list[Face] = []
    for item_id, group in by_item.items():
        path = items[item_id][0]
        people = labels.get(Path(path).name, [])

        def area(r: Any) -> float:
            x0, y0, x1, y1 = r.bbox
            return (x1 - x0) * (y1 - y0)

        named = sorted(
            sorted(group, key=area, reverse=True)[: len(people)], key=lambda r: r.bbox[0]
        )
        who = {r.ref: p for r, p in zip(named, people, strict=False)}
        vecs = decode_vectors([r.vector for r in group], len(group[0].vector) // 4)
        for r, v in zip(group, vecs, strict=True):
            faces.append(Face(r.ref, path, who.get(r.ref), confirmed.get(r.ref, True), v))
    return faces


def pair_scores(faces: list[Face]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Cosine of every two labelled, confirmed faces: (same person, different people)."""
    use = [f for f in faces if f.person is not None and f.confirmed]
    x = np.stack([f.vector for f in use]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    same, diff = [], []
    for (i, a), (j, b) in itertools.combinations(enumerate(use), 2):
        if a.path == b.path:
            continue  # two people of one photo are never the same face
        pair = {"a": a.path, "b": b.path, "cosine": round(float(x[i] @ x[j]), 4)}
        if a.person == b.person:
            same.append({**pair, "person": a.person})
        else:
            diff.append({**pair, "people": [a.person, b.person]})
    return same, diff


def cluster_quality(case: Path, faces: list[Face], threshold: float, min_faces: int) -> dict:
    """What ``heroes persons --min-similarity T --min-faces N`` makes of the case."""
    persons(case, min_faces=min_faces, min_similarity=threshold, recluster=True)
    ident = Identities.load(index_root(case) / IDENTITIES_FILE)
    who = {f.ref: f.person or f"bystander:{f.ref}" for f in faces}
    clusters = [[who[r] for r in ident.refs(i)] for i in ident.ids()]
    clustered = sum(len(c) for c in clusters)
    main = sum(Counter(c).most_common(1)[0][1] for c in clusters)
    impure = [sorted(set(c)) for c in clusters if len(set(c)) > 1]
    spread: dict[str, int] = Counter(p for c in clusters for p in set(c))
    split = sorted(p for p, n in spread.items() if n > 1)
    labelled = {f.person for f in faces if f.person and f.confirmed}
    found = {Counter(c).most_common(1)[0][0] for c in clusters}
    return {
        "clusters": len(clusters),
        "faces_clustered": clustered,
        "impure_clusters": len(impure),
        "merged": impure,
        "purity": round(main / clustered, 4) if clustered else None,
        "people_split": split,
        "people_found": len(found & labelled),
        "people": len(labelled),
    }


def order_robustness(
    faces: list[Face], threshold: float, orders: int, min_faces: int = 2
) -> dict[str, int]:
    """Chinese whispers visits faces in a seeded order, and the pass stores faces in the order
    files finish: cluster the same faces in ``orders`` shuffled orders and count the orders that
    put two people in one cluster, or one person in two."""
    use = [f for f in faces if f.confirmed]
    x = np.stack([f.vector for f in use])
    who = [f.person or f"bystander:{f.ref}" for f in use]
    impure = split = 0
    for seed in range(orders):
        perm = np.random.default_rng(seed).permutation(len(use))
        refs = [str(i) for i in perm]
        ident = cluster_faces(
            x[perm], refs, min_similarity=threshold, min_faces=min_faces, seed=seed
        )
        clusters = [{who[int(r)] for r in ident.refs(i)} for i in ident.ids()]
        impure += any(len(c) > 1 for c in clusters)
        seen = Counter(p for c in clusters for p in c)
        split += any(n > 1 for n in seen.values())
    return {"orders": orders, "with_merged_people": impure, "with_split_person": split}


def low_resolution(
    folder: Path, faces: list[Face], widths: list[int], threshold: float
) -> list[dict[str, Any]]:
    """Each one-person photo shrunk until its face is ``width`` px wide, run through the pass's
    models again: is the face still found, and does it still match the person's other photos?"""
    import cv2

    from heroes.pipeline.decode import load_rgb
    from heroes.pipeline.infer import Analyzer, InferOptions

    analyzer = Analyzer(InferOptions(age=None, scene_embed=None))
    named = [f for f in faces if f.person and f.confirmed]
    per_file = Counter(f.path for f in faces)
    single = [f for f in named if per_file[f.path] == 1]
    unit = {f.ref: f.vector / np.linalg.norm(f.vector) for f in named}
    rows = []
    for width in widths:
        found, own, same_ok, same_n, strangers_over, strangers_n = 0, [], 0, 0, 0, 0
        for f in single:
            rgb, _ = load_rgb((folder / f.path).read_bytes())
            (res,) = analyzer.analyze([rgb], [None])
            boxes = [v["bbox"] for v in res.vectors if v["kind"] == "face"]
            if not boxes:
                continue
            face_w = max(b[2] - b[0] for b in boxes)
            scale = min(1.0, width / face_w)
            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            (res,) = analyzer.analyze([np.ascontiguousarray(small)], [None])
            vecs = [(v["bbox"], v["vector"]) for v in res.vectors if v["kind"] == "face"]
            if not vecs:
                continue
            found += 1
            _, v = max(vecs, key=lambda bv: bv[0][2] - bv[0][0])
            v = np.asarray(v, np.float64) / np.linalg.norm(v)
            own.append(float(v @ unit[f.ref]))
            for g in named:
                if g.path == f.path:
                    continue
                c = float(v @ unit[g.ref])
                if g.person == f.person:
                    same_n += 1
                    same_ok += c >= threshold
                else:
                    strangers_n += 1
                    strangers_over += c >= threshold
        rows.append(
            {
                "face_width_px": width,
                "photos": len(single),
                "faces_found": found,
                "cosine_to_full_size_median": round(float(np.median(own)), 4) if own else None,
                "cosine_to_full_size_min": round(min(own), 4) if own else None,
                "same_person_split_rate": round(1 - same_ok / same_n, 4) if same_n else None,
                "false_merge_rate": round(strangers_over / strangers_n, 4) if strangers_n else None,
            }
        )
    return rows


def threshold_table(
    same: list[dict[str, Any]], diff: list[dict[str, Any]], thresholds: list[float]
) -> list[dict[str, Any]]:
    s = np.array([p["cosine"] for p in same])
    d = np.array([p["cosine"] for p in diff])
    rows = []
    for t in thresholds:
        rows.append(
            {
                "threshold": t,
                "false_merges": int((d >= t).sum()),
                "false_merge_rate": round(float((d >= t).mean()), 4),
                "splits": int((s < t).sum()),
                "split_rate": round(float((s < t).mean()), 4),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, default=Path("tests/data/faces"))
    ap.add_argument("--case", type=Path, help="Triaged case of --faces to reuse (else a new one).")
    ap.add_argument("--min-faces", type=int, nargs="+", default=[2, 3])
    ap.add_argument(
        "--widths",
        type=int,
        nargs="*",
        default=[64, 40, 28, 20],
        help="Face widths (px) for the low-resolution check; none to skip it.",
    )
    ap.add_argument("--orders", type=int, default=20, help="Shuffled orders per threshold.")
    ap.add_argument("--name", default="face_pairs", help="Result file name under results/.")
    ap.add_argument(
        "--assemble",
        nargs="+",
        metavar="REPO=DIR",
        help="First build --faces from face_pairs_calibration.csv and these checkouts.",
    )
    args = ap.parse_args()
    if args.assemble:
        assemble(args.faces, {k: Path(v) for k, v in (a.split("=", 1) for a in args.assemble)})
    labels = read_labels(args.faces)
    thresholds = [round(t, 2) for t in np.arange(0.80, 0.965, 0.01)]
    with tempfile.TemporaryDirectory() as tmp:
        case = args.case or Path(tmp) / "case"
        if args.case is None:
            triage(args.faces, case)
        faces = case_faces(case, labels)
        same, diff = pair_scores(faces)
        table = threshold_table(same, diff, thresholds)
        for row in table:
            for n in args.min_faces:
                row[f"persons_min_faces_{n}"] = cluster_quality(case, faces, row["threshold"], n)
            row["shuffled_orders"] = order_robustness(faces, row["threshold"], args.orders)
    lowres = low_resolution(args.faces, faces, args.widths, DEFAULT_MIN_SIMILARITY)
    missing = sorted(set(labels) - {Path(f.path).name for f in faces})
    s_sorted = sorted(same, key=lambda p: p["cosine"])
    d_sorted = sorted(diff, key=lambda p: -p["cosine"])
    print(
        f"{len(labels)} photos, {len(faces)} faces ({sum(not f.confirmed for f in faces)} "
        f"unconfirmed, {sum(f.person is None for f in faces)} bystanders), "
        f"{len({f.person for f in faces if f.person})} people; photos without a face: {missing}"
    )
    print(f"{len(same)} same-person pairs, {len(diff)} different-person pairs")
    print("lowest same-person:", [(p["a"], p["b"], p["cosine"]) for p in s_sorted[:5]])
    print("highest different-person:", [(p["a"], p["b"], p["cosine"]) for p in d_sorted[:5]])
    head = f"{'T':>5} {'false merges':>14} {'splits':>13}"
    for n in args.min_faces:
        head += f" | min_faces={n}: clusters impure purity split found"
    head += f" | of {args.orders} orders: merged split"
    print(head)
    for row in table:
        line = (
            f"{row['threshold']:5.2f} {row['false_merges']:4d} ({row['false_merge_rate']:.4f})"
            f" {row['splits']:4d} ({row['split_rate']:.3f})"
        )
        for n in args.min_faces:
            q = row[f"persons_min_faces_{n}"]
            line += (
                f" | {q['clusters']:3d} {q['impure_clusters']:3d} "
                f"{q['purity'] if q['purity'] is not None else '-':>6} {len(q['people_split']):3d}"
                f" {q['people_found']:2d}/{q['people']}"
            )
        o = row["shuffled_orders"]
        line += f" | {o['with_merged_people']:3d} {o['with_split_person']:3d}"
        print(line)
    print(f"low resolution (at the default {DEFAULT_MIN_SIMILARITY}):")
    for r in lowres:
        print(
            f"  face {r['face_width_px']:3d} px: found {r['faces_found']}/{r['photos']}, cosine to"
            f" full size median {r['cosine_to_full_size_median']} min"
            f" {r['cosine_to_full_size_min']}, same-person split rate"
            f" {r['same_person_split_rate']}, false-merge rate {r['false_merge_rate']}"
        )
    write_result(
        args.name,
        {
            "faces_dir": args.faces.name,
            "default_threshold": DEFAULT_MIN_SIMILARITY,
            "photos": len(labels),
            "faces": len(faces),
            "people": len({f.person for f in faces if f.person}),
            "photos_without_face": missing,
            "same_pairs": len(same),
            "different_pairs": len(diff),
            "lowest_same": s_sorted[:10],
            "highest_different": d_sorted[:10],
            "same_cosines": sorted(p["cosine"] for p in same),
            "different_cosines_top": [p["cosine"] for p in d_sorted[:50]],
            "table": table,
            "low_resolution": lowres,
        },
    )


if __name__ == "__main__":
    main()
