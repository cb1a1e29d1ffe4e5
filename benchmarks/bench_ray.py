"""The triage pass (hash + decode + EXIF + PDQ + models) as a Ray Data plan, against a plain loop.

Inputs: ``--files`` web-size JPEGs (random crops, mirrors and resizes of the benign sample photos
shipped by scikit-image and scikit-learn, about 640x480) written to a temporary directory. Every
configuration does the same per-file work: one read hashed with MD5/SHA-1/SHA-256, a decode to a
512 px working copy with EXIF and PDQ, and ``Analyzer.analyze`` on that copy (NudeNet detector,
dlib landmarks, age, face embedding; no scene embedding), one call per file.

Configurations:

- ``plain_loop``: one Python process, models loaded once, ORT threads = all cores (baseline);
- ``naive``: ``read_binary_files`` -> ``map_batches(decode)`` tasks -> ``map_batches(InferActor)``
  on an actor pool of 1, default ORT threads, default ``DataContext``;
- ``two_stage_*``: the same split with a tuned ``DataContext`` and numpy zero-copy batches;
- ``fused_*``: one actor class does everything, so pixels never enter the object store; paths
  (``from_items``) or bytes (``read_binary_files``) stream in; actor count, ORT threads and batch
  size vary.

Ray runs embedded (``ray.init(num_cpus=cores)``), started once; ``ray.init`` time is reported on
its own. For each Ray plan, ``first_batch_s`` is the time until the driver holds its first batch
(actor start and model loading included), ``load_s`` the model loading measured inside the actor,
``img_s`` the whole pass and ``steady_img_s`` the rate after the first batch. Configurations take
turns pass by pass and the best pass of each is kept.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, write_result
from numpy.typing import NDArray
from PIL import Image

Batch = dict[str, Any]
RATIO_TARGET = 0.8
SIDES = (560, 720)


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for pkg in ("heroes", "ray", "pyarrow", "numpy", "onnxruntime", "dlib-bin", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def make_files(dest: Path, count: int, seed: int) -> list[Path]:
    """``count`` distinct JPEGs: crops (55-100 % of each side), maybe mirrored, 560-720 px wide."""
    from heroes.demo import sample_photos

    photos = list(sample_photos().values())
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        src = photos[i % len(photos)]
        h, w = src.shape[:2]
        fh, fw = rng.uniform(0.55, 1.0, 2)
        ch, cw = max(16, int(h * fh)), max(16, int(w * fw))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = src[y0 : y0 + ch, x0 : x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        im = Image.fromarray(np.ascontiguousarray(crop))
        width = int(rng.integers(SIDES[0], SIDES[1] + 1))
        im = im.resize((width, max(1, round(ch * width / cw))), Image.Resampling.BILINEAR)
        p = dest / f"{i:06d}.jpg"
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(80, 95)))
        p.write_bytes(buf.getvalue())
        paths.append(p)
    return paths


def new_analyzer(threads: int | None) -> Any:
    """An Analyzer whose models are loaded (one tiny call), so later calls time steady work."""
    from heroes.pipeline.infer import Analyzer, InferOptions

    analyzer = Analyzer(InferOptions(scene_embed=None, threads=threads))
    analyzer.analyze([np.zeros((64, 64, 3), np.uint8)], [None])
    return analyzer


def decode_one(data: bytes) -> tuple[Any, str]:
    from heroes.pipeline.decode import analyze_image
    from heroes.pipeline.identify import hash_bytes

    digests = hash_bytes(data)
    return analyze_image(data, working_size=512, keep_pixels=True), digests.md5


def infer_one(analyzer: Any, pixels: NDArray[np.uint8], width: int) -> tuple[float, int]:
    res = analyzer.analyze([pixels], [None], scale=width / pixels.shape[1])[0]
    return res.nudity_score, len(res.faces)


def triage_path(analyzer: Any, path: str) -> tuple[str, str | None, float, int]:
    from heroes.pipeline.identify import hash_file

    digests, _head, data = hash_file(Path(path), keep_up_to=1 << 26)
    assert data is not None
    return triage_bytes(analyzer, data, digests.md5)


def triage_bytes(
    analyzer: Any, data: bytes, md5: str | None = None
) -> tuple[str, str | None, float, int]:
    if md5 is None:
        ana, md5 = decode_one(data)
    else:
        from heroes.pipeline.decode import analyze_image

        ana = analyze_image(data, working_size=512, keep_pixels=True)
    score, faces = infer_one(analyzer, ana.pixels, ana.width)
    return md5, ana.pdq, score, faces


def plain_loop(paths: list[Path], analyzer: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = [triage_path(analyzer, str(p)) for p in paths]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "rows": len(out), "faces": sum(r[3] for r in out)}


class DecodeTask:
    """hash + decode + PDQ over a batch of file bytes; emits the pixels for the model stage."""

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["bytes"])
        pixels = np.empty(n, dtype=object)
        md5, pdq, width = [], [], []
        for i, data in enumerate(batch["bytes"]):
            ana, digest = decode_one(bytes(data))
            pixels[i] = ana.pixels
            md5.append(digest)
            pdq.append(ana.pdq)
            width.append(ana.width)
        return {"md5": md5, "pdq": pdq, "width": np.array(width), "pixels": pixels}


def decode_batch(batch: Batch) -> Batch:
    return DecodeTask()(batch)


class InferActor:
    """The models of one actor, applied to decoded working copies."""

    def __init__(self, threads: int | None = None) -> None:
        t0 = time.perf_counter()
        self.analyzer = new_analyzer(threads)
        self.load_s = time.perf_counter() - t0

    def __call__(self, batch: Batch) -> Batch:
        scores, faces = [], []
        for px, width in zip(batch["pixels"], batch["width"], strict=True):
            s, f = infer_one(self.analyzer, np.asarray(px), int(width))
            scores.append(s)
            faces.append(f)
        n = len(scores)
        return {
            "md5": batch["md5"],
            "pdq": batch["pdq"],
            "nudity": np.array(scores),
            "faces": np.array(faces),
            "load_s": np.full(n, self.load_s),
        }


class FusedActor:
    """hash + decode + PDQ + models in one actor: pixels stay in the actor's memory."""

    def __init__(self, threads: int | None = None) -> None:
        t0 = time.perf_counter()
        self.analyzer = new_analyzer(threads)
        self.load_s = time.perf_counter() - t0

    def __call__(self, batch: Batch) -> Batch:
        if "bytes" in batch:
            rows = [triage_bytes(self.analyzer, bytes(b)) for b in batch["bytes"]]
        else:
            rows = [triage_path(self.analyzer, str(p)) for p in batch["path"]]
        return {
            "md5": [r[0] for r in rows],
            "pdq": [r[1] for r in rows],
            "nudity": np.array([r[2] for r in rows]),
            "faces": np.array([r[3] for r in rows]),
            "load_s": np.full(len(rows), self.load_s),
        }


def configure(tuned: bool) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = not tuned
    if tuned:
        ctx.target_max_block_size = 8 * 2**20
    else:
        ctx.target_max_block_size = DEFAULT_BLOCK[0]


DEFAULT_BLOCK: list[int] = []


def consume(ds: Any, t0: float) -> dict[str, Any]:
    first_t, first_n, rows, faces, load = None, 0, 0, 0, 0.0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n = len(batch["md5"])
        if first_t is None:
            first_t, first_n = time.perf_counter(), n
        rows += n
        faces += int(np.sum(batch["faces"]))
        load = max(load, float(np.max(batch["load_s"])))
    end = time.perf_counter()
    assert first_t is not None
    steady = (rows - first_n) / (end - first_t) if end > first_t else 0.0
    return {
        "wall_s": end - t0,
        "rows": rows,
        "faces": faces,
        "first_batch_s": round(first_t - t0, 2),
        "load_s": round(load, 2),
        "steady_img_s": round(steady, 1),
    }


def ray_plan(
    paths: list[Path],
    directory: Path,
    *,
    shape: str,
    actors: int,
    threads: int | None,
    batch: int,
    source: str,
    tuned: bool,
    cores: int,
) -> Callable[[], dict[str, Any]]:
    import ray.data
    from ray.data import ActorPoolStrategy

    def run() -> dict[str, Any]:
        configure(tuned)
        t0 = time.perf_counter()
        if source == "paths":
            ds = ray.data.from_items([{"path": str(p)} for p in paths])
        else:
            read_cpus = 0.25 if tuned else 1
            ds = ray.data.read_binary_files(str(directory), include_paths=False, num_cpus=read_cpus)
        numpy_args: dict[str, Any] = {"batch_format": "numpy"}
        if tuned:
            numpy_args["zero_copy_batch"] = True
        if shape == "fused":
            ds = ds.map_batches(
                FusedActor,
                fn_constructor_kwargs={"threads": threads},
                compute=ActorPoolStrategy(size=actors),
                batch_size=batch,
                num_cpus=(cores - (0.25 if source == "bytes" else 0)) / actors,
                **numpy_args,
            )
        else:
            decode_cpus = {"num_cpus": 0.5} if shape == "unfused" else {}
            ds = ds.map_batches(decode_batch, batch_size=batch, **decode_cpus, **numpy_args)
            ds = ds.map_batches(
                InferActor,
                fn_constructor_kwargs={"threads": threads},
                compute=ActorPoolStrategy(size=actors),
                batch_size=batch,
                **numpy_args,
            )
        return consume(ds, t0)

    return run


def configs(
    paths: list[Path], directory: Path, cores: int, quick: bool
) -> dict[str, Callable[[], dict[str, Any]]]:
    common = {"paths": paths, "directory": directory, "cores": cores}
    plans: dict[str, dict[str, Any]] = {
        "naive": dict(shape="two", actors=1, threads=None, batch=8, source="bytes", tuned=False),
        "two_stage_tuned": dict(
            shape="two", actors=1, threads=2, batch=8, source="bytes", tuned=True
        ),
        "two_stage_unfused": dict(
            shape="unfused", actors=1, threads=1, batch=8, source="bytes", tuned=True
        ),
        "fused_paths_1x2_b8": dict(
            shape="fused", actors=1, threads=2, batch=8, source="paths", tuned=True
        ),
        "fused_paths_2x1_b8": dict(
            shape="fused", actors=2, threads=1, batch=8, source="paths", tuned=True
        ),
        "fused_paths_2x1_b32": dict(
            shape="fused", actors=2, threads=1, batch=32, source="paths", tuned=True
        ),
        "fused_bytes_2x1_b8": dict(
            shape="fused", actors=2, threads=1, batch=8, source="bytes", tuned=True
        ),
        "fused_paths_2x1_b8_default_ctx": dict(
            shape="fused", actors=2, threads=1, batch=8, source="paths", tuned=False
        ),
    }
    if quick:
        keep = ("naive", "fused_paths_1x2_b8", "fused_paths_2x1_b8")
        plans = {k: v for k, v in plans.items() if k in keep}
    return {name: ray_plan(**common, **kw) for name, kw in plans.items()}


def home_entries() -> set[str]:
    home = Path.home()
    found = set()
    for base in (home, home / ".cache", home / ".config", home / ".ray", home / ".local"):
        if base.is_dir():
            found.update(str(p) for p in base.iterdir())
    return found


def rounds(
    fns: dict[str, Callable[[], dict[str, Any]]], repeat: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    for _ in range(repeat):
        for name, fn in fns.items():
            yield name, fn()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=None, help="passes per configuration")
    ap.add_argument("--quick", action="store_true", help="200 files, 3 plans, one pass")
    args = ap.parse_args()
    files = 200 if args.quick else args.files
    repeat = args.repeat or (1 if args.quick else 2)
    info = machine()
    cores = os.cpu_count() or 1
    vers = versions()
    print(f"seed={args.seed} files={files} repeat={repeat} quick={args.quick}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))

    home_before = home_entries()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        for sub in ("models", "cache", "ray", "img"):
            (root / sub).mkdir()
        os.environ.update(
            RAY_AUTH_MODE="disabled",
            XDG_CACHE_HOME=str(root / "cache"),
            HEROES_MODEL_DIR=str(root / "models"),
            RAY_USAGE_STATS_ENABLED="0",
        )
        sys.path.insert(0, str(Path(__file__).parent))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        )
        paths = make_files(root / "img", files, args.seed)
        sizes = [p.stat().st_size for p in paths]
        load_before = os.getloadavg()

        t0 = time.perf_counter()
        analyzer = new_analyzer(None)
        plain_load_s = time.perf_counter() - t0

        import ray
        import ray.data

        t0 = time.perf_counter()
        ray.init(
            num_cpus=cores,
            include_dashboard=False,
            _temp_dir=str(root / "ray"),
            log_to_driver=False,
            configure_logging=True,
            logging_level="ERROR",
        )
        init_s = time.perf_counter() - t0
        DEFAULT_BLOCK.append(ray.data.DataContext.get_current().target_max_block_size)

        plans = configs(paths, root / "img", cores, args.quick)
        warm = plans["naive"]()
        fns: dict[str, Callable[[], dict[str, Any]]] = {
            "plain_loop": lambda: plain_loop(paths, analyzer),
            **plans,
        }
        best: dict[str, dict[str, Any]] = {}
        passes: dict[str, list[float]] = {}
        for name, res in rounds(fns, repeat):
            res["img_s"] = round(res["rows"] / res["wall_s"], 1)
            passes.setdefault(name, []).append(res["img_s"])
            print(f"{name}: {res['img_s']} img/s {res}", flush=True)
            if name not in best or res["img_s"] > best[name]["img_s"]:
                best[name] = res
        ray.shutdown()
        load_after = os.getloadavg()
    home_new = sorted(home_entries() - home_before)

    base = best["plain_loop"]["img_s"]
    table = {}
    for name, res in best.items():
        row = {k: res[k] for k in ("img_s", "steady_img_s", "first_batch_s", "load_s") if k in res}
        row["ratio_to_plain"] = round(res["img_s"] / base, 2)
        if "steady_img_s" in res:
            row["steady_ratio_to_plain"] = round(res["steady_img_s"] / base, 2)
        row["passes_img_s"] = passes[name]
        row["faces"] = res["faces"]
        table[name] = row
    print(f"\n{'config':32} {'img/s':>7} {'ratio':>6} {'steady':>7} {'ratio':>6} {'first':>6}")
    for name, row in table.items():
        print(
            f"{name:32} {row['img_s']:7.1f} {row['ratio_to_plain']:6.2f} "
            f"{row.get('steady_img_s', row['img_s']):7.1f} "
            f"{row.get('steady_ratio_to_plain', row['ratio_to_plain']):6.2f} "
            f"{row.get('first_batch_s', 0):6.1f}"
        )
    write_result(
        "ray",
        {
            "seed": args.seed,
            "quick": args.quick,
            "repeat": repeat,
            "versions": vers,
            "load_average_1_5_15": {
                "before": [round(x, 2) for x in load_before],
                "after": [round(x, 2) for x in load_after],
            },
            "inputs": {
                "files": files,
                "mean_kib": round(sum(sizes) / len(sizes) / 1024, 1),
                "width_px": list(SIDES),
            },
            "startup": {
                "ray_init_s": round(init_s, 2),
                "plain_model_load_s": round(plain_load_s, 2),
                "first_naive_pass": {k: warm[k] for k in ("wall_s", "first_batch_s", "load_s")},
            },
            "target_ratio": RATIO_TARGET,
            "results": table,
            "home_entries_created": home_new,
        },
    )


if __name__ == "__main__":
    main()
