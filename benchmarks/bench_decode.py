"""JPEG decode at working size: heroes (draft mode, DCT scaling) against a full decode then resize,
on the same large photos in the same run."""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from _common import write_result
from PIL import Image

from heroes.pipeline.decode import analyze_image


def make_photo(width: int, height: int, seed: int) -> bytes:
    import skimage.data as data

    base = Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.BILINEAR)
    noise = np.random.default_rng(seed).normal(0, 6, (height, width, 3))
    arr = np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def full_decode(data: bytes, size: int) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im = im.convert("RGB")
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im)


def timeit(fn, items, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return best / len(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"seed={args.seed} {args.count} photos of {args.width}x{args.height}")
    photos = [make_photo(args.width, args.height, args.seed + i) for i in range(args.count)]
    full = timeit(lambda d: full_decode(d, args.size), photos, args.repeat)
    ours_decode = timeit(lambda d: analyze_image(d, working_size=args.size), photos, args.repeat)
    full_plus_pdq = timeit(
        lambda d: __import__("pdqhash").compute(full_decode(d, args.size)), photos, args.repeat
    )
    write_result(
        "decode",
        {
            "seed": args.seed,
            "photos": args.count,
            "megapixels": args.width * args.height / 1e6,
            "working_size": args.size,
            "ms_per_photo": {
                "full_decode_then_resize": round(full * 1000, 1),
                "full_decode_resize_pdq": round(full_plus_pdq * 1000, 1),
                "heroes_analyze_image (draft + orientation + exif + pdq)": round(
                    ours_decode * 1000, 1
                ),
            },
            "speedup_vs_full_decode_plus_pdq": round(full_plus_pdq / ours_decode, 2),
        },
    )


if __name__ == "__main__":
    main()
