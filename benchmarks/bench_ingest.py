"""End-to-end ingest: ``heroes.pipeline.runner.triage`` over N generated small JPEGs (hash,
sniff, match, decode, EXIF, PDQ, persist, finalize) against a plain sequential Python loop doing
the same hashing, decode and PDQ in the same run."""

from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pdqhash
from _common import write_result
from PIL import Image

from heroes.config import Settings
from heroes.pipeline.infer import Analyzer, InferOptions
from heroes.pipeline.runner import triage


def make_seizure(root: Path, n: int, seed: int) -> int:
    import skimage.data as data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        base = photos[i % len(photos)]
        h, w = base.shape[:2]
        y, x = rng.integers(0, h // 3), rng.integers(0, w // 3)
        crop = base[y : y + 2 * h // 3, x : x + 2 * w // 3]
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, "JPEG", quality=int(rng.integers(60, 95)))
        d = root / f"dir{i % 50:02d}"
        d.mkdir(exist_ok=True)
        (d / f"img{i:06d}.jpg").write_bytes(buf.getvalue())
        total += len(buf.getvalue())
    return total


def plain_loop(root: Path, analyzer: Analyzer | None = None) -> int:
    n = 0
    for p in sorted(root.rglob("*.jpg")):
        data = p.read_bytes()
        (
            hashlib.md5(data).hexdigest(),
            hashlib.sha1(data).hexdigest(),
            hashlib.sha256(data).hexdigest(),
        )
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (512, 512))
        im = im.convert("RGB")
        im.thumbnail((512, 512))
        rgb = np.asarray(im)
        pdqhash.compute(rgb)
        if analyzer is not None:
            analyzer.analyze([rgb], [None])
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument(
        "--models", action="store_true", help="run the models too (detector, faces, scene)"
    )
    args = ap.parse_args()
    print(f"seed={args.seed} files={args.files}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "seizure"
        root.mkdir()
        nbytes = make_seizure(root, args.files, args.seed)
        settings = Settings(workers=args.workers, models=args.models)
        analyzer = Analyzer(InferOptions()) if args.models else None
        if analyzer is not None:
            analyzer.analyze([np.zeros((64, 64, 3), np.uint8)], [None])  # load the models
        plain_loop(root)  # warm the page cache for both
        t0 = time.perf_counter()
        plain_loop(root, analyzer)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = triage(root, Path(tmp) / "case", settings=settings)
        t_heroes = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = triage(root, Path(tmp) / "case", settings=settings)
        t_resume = time.perf_counter() - t0
        assert summary.new == args.files and again.resumed == args.files
        write_result(
            "ingest_models" if args.models else "ingest",
            {
                "seed": args.seed,
                "files": args.files,
                "models": args.models,
                "mean_kib": round(nbytes / args.files / 1024, 1),
                "workers": Settings(workers=args.workers).workers or None,
                "files_per_s": {
                    "plain_loop (same stages, one process, no store)": round(
                        args.files / t_plain, 1
                    ),
                    "heroes triage (all stages + store + finalize)": round(
                        args.files / t_heroes, 1
                    ),
                    "heroes re-run (resume: nothing to do)": round(args.files / t_resume, 1),
                },
                "ratio_heroes_vs_plain_loop": round(t_plain / t_heroes, 2),
            },
        )


if __name__ == "__main__":
    main()
