"""The GPU check of issue 11: per-stage rates and the end-to-end split plan on one GPU node.

Run through ``benchmarks/gpu_check.sh`` (which installs the ``gpu`` extra first and bounds the
whole check to 5 minutes), or directly. Steps, each bounded in time, each one's failure recorded
in the JSON rather than stopping the check:

1. machine: GPU name, driver and memory (``nvidia-smi``), torch/CUDA, ONNX Runtime providers,
   whether the GPU JPEG decode (heroes.pipeline.gpu_decode) is available;
2. ``--files`` distinct web-size JPEGs (``bench_ray.make_files``: crops, mirrors and resizes of
   the benign sample photos of scikit-image and scikit-learn), made on all cores;
3. per-stage rates on a sample of them: read, CPU decode (working copy only; and the pass's
   ``analyze_image``: decode + EXIF + PDQ) on one core and on all cores, GPU decode of batches,
   the detector in batches on the CUDA provider, the face branch (dlib landmarks and chips on the
   CPU, age and face embedding in batches on the device), the scene embedding, and the whole
   ``Analyzer`` over a batch;
4. end to end: ``heroes triage EVID --case CASE --engine ray --layout split --gpus 1 --json``
   in a subprocess (``--cpu-smoke``: ``--gpus 0 --cpus 2``), images/s over its wall time and as
   the pass itself reports it.

``nvidia-smi`` is sampled every 200 ms in the background (utilisation and memory), and each
stage reports the mean and peak utilisation of its own time window. Prints a table and writes
JSON: ``--out FILE``, else ``$OUT/gpu_check.json`` when ``OUT`` is set, else
``benchmarks/results/gpu_check.json``. The goal of issue 11 is >= 3,000 images/s end to end on
one H200.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _common import package_versions  # noqa: E402

GOAL_IMG_S = 3000.0


# --- GPU sampling -------------------------------------------------------------------------------
class GpuSampler:
    """``nvidia-smi`` in a background process, one line per GPU every ``interval_ms``."""

    def __init__(self, interval_ms: int = 200) -> None:
        self.interval_ms = interval_ms
        self.samples: list[tuple[float, float, float]] = []  # (time, util %, memory MiB)
        self.proc: subprocess.Popen[str] | None = None
        self.thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> GpuSampler:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            self.error = "nvidia-smi not found"
            return self
        cmd = [
            exe,
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            f"--loop-ms={self.interval_ms}",
        ]
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        except OSError as exc:
            self.error = str(exc)
            return self
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append((time.perf_counter(), float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                continue

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def window(self, t0: float, t1: float) -> dict[str, Any] | None:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            return None
        util = [s[1] for s in inside]
        return {
            "util_mean_pct": round(sum(util) / len(util), 1),
            "util_max_pct": max(util),
            "memory_max_mib": max(s[2] for s in inside),
            "samples": len(inside),
        }


# --- helpers ------------------------------------------------------------------------------------
class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def run_stage(
    results: dict[str, Any],
    name: str,
    fn: Callable[[], dict[str, Any]],
    sampler: GpuSampler,
    deadline: Deadline,
    reserve: float,
) -> None:
    """Run one stage, record its numbers, its GPU window, or why it did not run."""
    if deadline.left() < reserve:
        results[name] = {"skipped": f"time budget: {deadline.left():.0f} s left"}
        print(f"{name}: skipped (time)", flush=True)
        return
    t0 = time.perf_counter()
    try:
        res = fn()
    except Exception as exc:  # a stage that breaks is a finding, not the end of the check
        res = {"error": f"{type(exc).__name__}: {exc}"[:800]}
    t1 = time.perf_counter()
    res["stage_s"] = round(t1 - t0, 2)
    gpu = sampler.window(t0, t1)
    if gpu is not None:
        res["gpu"] = gpu
    results[name] = res
    print(f"{name}: {json.dumps(res)}", flush=True)


def timed(count: int, fn: Callable[[], Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    fn()
    took = time.perf_counter() - t0
    return {"items": count, "s": round(took, 3), "per_s": round(count / took, 1) if took else None}


def versions() -> dict[str, str]:
    return package_versions(
        "heroes",
        "torch",
        "torchvision",
        "onnxruntime",
        "onnxruntime-gpu",
        "ray",
        "numpy",
        "pillow",
        "faiss-cpu",
        "faiss-gpu",
    )


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    exe = shutil.which("nvidia-smi")
    if exe:
        q = "name,driver_version,memory.total,clocks.max.sm"
        out = subprocess.run(
            [exe, f"--query-gpu={q}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["gpus"] = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    else:
        info["gpus"] = []
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["torch_sees_cuda"] = bool(torch.cuda.is_available())
    except Exception as exc:
        info["torch"] = f"unusable: {exc}"[:200]
    try:
        import onnxruntime as ort

        info["ort_providers"] = list(ort.get_available_providers())
    except Exception as exc:
        info["ort_providers"] = f"unusable: {exc}"[:200]
    try:
        from heroes.pipeline import gpu_decode

        info["gpu_jpeg_decode"] = gpu_decode.available()
    except Exception as exc:
        info["gpu_jpeg_decode"] = f"unusable: {exc}"[:200]
    info["versions"] = versions()
    return info


# --- inputs ---------------------------------------------------------------------------------------
def _make_chunk(job: tuple[str, int, int]) -> int:
    from bench_ray import make_files

    dest, count, seed = job
    Path(dest).mkdir(parents=True, exist_ok=True)
    return len(make_files(Path(dest), count, seed))


def make_inputs(dest: Path, files: int, seed: int, workers: int) -> dict[str, Any]:
    chunk = max(1, -(-files // (workers * 4)))
    jobs = [
        (str(dest / f"part{k:03d}"), min(chunk, files - a), seed + k)
        for k, a in enumerate(range(0, files, chunk))
    ]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        made = sum(pool.map(_make_chunk, jobs))
    sizes = [p.stat().st_size for p in dest.rglob("*.jpg")]
    return {
        "files": made,
        "mean_kib": round(sum(sizes) / max(1, len(sizes)) / 1024, 1),
        "make_s": round(time.perf_counter() - t0, 1),
    }


# --- stages -------------------------------------------------------------------------------------
def _decode_only(data: bytes) -> int:
    from heroes.pipeline.decode import load_rgb

    return int(load_rgb(data, working_size=512)[0].shape[0])


def _analyze(data: bytes) -> int:
    from heroes.pipeline.decode import analyze_image

    return int(analyze_image(data, working_size=512).width)


def _pool_rate(fn: Callable[[bytes], int], datas: list[bytes], workers: int) -> dict[str, Any]:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(fn, datas[: workers * 4]))  # start the workers and import heroes first
        return timed(len(datas), lambda: list(pool.map(fn, datas, chunksize=16)))


class Stages:
    """The per-stage measurements, sharing the sample's bytes and working copies."""

    def __init__(self, paths: list[Path], sample: int, device: str, workers: int) -> None:
        self.paths = paths[:sample]
        self.device = device
        self.workers = workers
        self.datas: list[bytes] = []
        self.frames: list[Any] = []
        self.dets: list[Any] = []

    def read(self) -> dict[str, Any]:
        def go() -> None:
            self.datas = [p.read_bytes() for p in self.paths]

        res = timed(len(self.paths), go)
        res["mib"] = round(sum(map(len, self.datas)) / 2**20, 1)
        return res

    def cpu_decode(self) -> dict[str, Any]:
        from heroes.pipeline.decode import load_rgb

        one = self.datas[: min(len(self.datas), 300)]
        self.frames = [load_rgb(d, working_size=512)[0] for d in self.datas]
        return {
            "decode_one_core": timed(len(one), lambda: [_decode_only(d) for d in one]),
            "analyze_image_one_core": timed(len(one), lambda: [_analyze(d) for d in one]),
            f"decode_{self.workers}_procs": _pool_rate(_decode_only, self.datas, self.workers),
            f"analyze_image_{self.workers}_procs": _pool_rate(_analyze, self.datas, self.workers),
        }

    def gpu_decode(self) -> dict[str, Any]:
        from heroes.pipeline import gpu_decode

        if self.device != "cuda" or not gpu_decode.available():
            return {"skipped": "no CUDA device with torchvision (heroes.pipeline.gpu_decode)"}
        import torch

        gpu_decode.decode_jpegs(self.datas[:64], 512, "cuda")  # warm-up: nvJPEG handles
        out: dict[str, Any] = {}
        for batch in (64, 256):

            def go(b: int = batch) -> list[Any]:
                got: list[Any] = []
                for a in range(0, len(self.datas), b):
                    got += gpu_decode.decode_jpegs(self.datas[a : a + b], 512, "cuda")
                torch.cuda.synchronize()
                return got

            res = timed(len(self.datas), go)
            out[f"batch_{batch}"] = res
        got = gpu_decode.decode_jpegs(self.datas[:256], 512, "cuda")
        out["left_to_cpu_of_256"] = sum(x is None for x in got)
        # the device's working copies against the CPU's: same shapes, a few levels apart
        import numpy as np

        diffs, mismatched = [], 0
        for dev, cpu in zip(got, self.frames[:256], strict=False):
            if dev is None:
                continue
            if dev.shape != cpu.shape:
                mismatched += 1
                continue
            diffs.append(float(np.abs(dev.astype(np.int16) - cpu.astype(np.int16)).mean()))
        out["shape_mismatches"] = mismatched
        out["mean_abs_diff_vs_cpu"] = round(float(np.mean(diffs)), 3) if diffs else None
        return out

    def detector(self) -> dict[str, Any]:
        from heroes.models.detect import Detector

        det = Detector(device=self.device)
        det.detect(self.frames[:2])
        out: dict[str, Any] = {"providers": det.providers[:1], "max_batch": det.max_batch}
        out["end_to_end"] = timed(
            len(self.frames), lambda: setattr(self, "dets", det.detect(self.frames))
        )
        x, _ = det.preprocess(self.frames[:256])
        out["model_only_256"] = timed(len(x), lambda: det.run(x))
        out["faces_found"] = sum(len(d.faces) for d in self.dets)
        return out

    def faces(self) -> dict[str, Any]:
        import numpy as np

        from heroes.models.faces import AgeEstimator, FaceEmbedder, Landmarks

        if not self.dets:
            return {"skipped": "no detections (the detector stage did not run)"}
        lm = Landmarks()
        age = AgeEstimator(device=self.device)
        emb = FaceEmbedder(device=self.device)
        t0 = time.perf_counter()
        emb.embed(np.zeros((1, emb.chip_size, emb.chip_size, 3), np.uint8))
        age.estimate(np.zeros((1, age.chip_size, age.chip_size, 3), np.uint8))
        first = time.perf_counter() - t0
        age_chips: list[Any] = []
        emb_chips: list[Any] = []
        age_pad, emb_pad = age.spec.input.chip_padding, emb.spec.input.chip_padding

        def landmarks_and_chips() -> None:
            for frame, d in zip(self.frames, self.dets, strict=True):
                if not d.faces:
                    continue
                shapes = lm.shapes(frame, [f.bbox for f in d.faces])
                age_chips.append(lm.chips(frame, shapes, age.chip_size, age_pad))
                emb_chips.append(lm.chips(frame, shapes, emb.chip_size, emb_pad))

        faces = sum(len(d.faces) for d in self.dets)
        out: dict[str, Any] = {"faces": faces, "load_s_incl_conversion": round(first, 2)}
        out["landmarks_and_chips_cpu"] = timed(faces, landmarks_and_chips)
        if age_chips:
            a, e = np.concatenate(age_chips), np.concatenate(emb_chips)
            out["age"] = timed(len(a), lambda: age.estimate(a))
            out["face_embed"] = timed(len(e), lambda: emb.embed(e))
            out["providers"] = {"age": age.providers[:1], "face_embed": emb.providers[:1]}
        return out

    def scene(self) -> dict[str, Any]:
        from heroes.models.scene_embed import SceneEmbedder

        scene = SceneEmbedder()
        scene.embed(self.frames[:1])
        part = self.frames[: min(len(self.frames), 200 if self.device == "cuda" else 8)]
        res = timed(len(part), lambda: scene.embed(part))
        res["note"] = "scene-vlad is SIFT + VLAD on the CPU: off in the end-to-end run"
        return res

    def analyzer(self) -> dict[str, Any]:
        from heroes.pipeline.infer import Analyzer, InferOptions

        an = Analyzer(InferOptions(device=self.device, scene_embed=None))
        an.analyze(self.frames[:2], [None, None])
        part = self.frames[: min(len(self.frames), 512)]
        res = timed(len(part), lambda: an.analyze(part, [None] * len(part)))
        res["note"] = "detector + landmarks + confirm + age + face embedding, one call, no scene"
        return res


def end_to_end(
    evidence: Path,
    work: Path,
    files: int,
    smoke: bool,
    timeout: float,
    extra: list[str],
    scene: bool = False,
) -> dict[str, Any]:
    case = work / "case"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "heroes.cli", "triage", str(evidence), "--case", str(case)]
    cmd += ["--engine", "ray", "--layout", "split", "--json", "--no-progress"]
    cmd += ["--gpus", "0", "--cpus", "2"] if smoke else ["--gpus", "1"]
    cmd += extra
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if not scene:
        # the default scene model (SIFT-VLAD) runs on the CPU at about 70 ms per image: with it
        # the run measures the CPU, not the GPU path (its own stage above times it)
        env["HEROES_SCENE_MODEL"] = ""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=max(5.0, timeout), env=env
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-1500:]
        return {
            "command": " ".join(cmd[1:]),
            "error": f"timed out after {timeout:.0f} s",
            "stderr_tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail,
        }
    wall = time.perf_counter() - t0
    res: dict[str, Any] = {
        "command": " ".join(cmd[1:]),
        "scene_model": "default" if scene else "off (HEROES_SCENE_MODEL='')",
        "rc": proc.returncode,
        "wall_s": round(wall, 2),
    }
    if proc.returncode != 0:
        res["stderr_tail"] = proc.stderr[-1500:]
        return res
    try:
        summary = json.loads(proc.stdout[proc.stdout.index("{") :])
    except ValueError:
        res["stdout_tail"] = proc.stdout[-1500:]
        return res
    res["img_s_wall"] = round(files / wall, 1)
    after = (summary.get("ray") or {}).get("after_first_s")
    if after:  # the rate once Ray, the actors and the models have started
        res["img_s_after_first_result"] = round(files / after, 1)
    res["summary"] = {
        k: summary.get(k)
        for k in ("new", "elapsed_s", "files_per_s", "frames_per_s", "faces", "models", "ray")
        if k in summary
    }
    return res


# --- main ----------------------------------------------------------------------------------------
def default_out() -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return HERE / "results" / "gpu_check.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=2048, help="files timed in the stages")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=280.0, help="seconds for the whole check")
    ap.add_argument("--cpu-smoke", action="store_true", help="100 files on the CPU, no GPU")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="keep files and case here")
    ap.add_argument("--e2e-arg", action="append", default=[], help="extra triage option")
    ap.add_argument(
        "--e2e-variant",
        action="append",
        default=None,
        help="options of a second end-to-end run when time is left (default: --actors=4)",
    )
    ap.add_argument(
        "--e2e-scene", action="store_true", help="keep the CPU scene model in the end-to-end run"
    )
    args = ap.parse_args(argv)
    if args.e2e_variant is None:
        args.e2e_variant = ["--actors=4"]
    deadline = Deadline(args.budget)
    if args.cpu_smoke:
        args.files, args.sample = min(args.files, 100), min(args.sample, 16)
    out_path = args.out or default_out()
    workers = os.cpu_count() or 1
    result: dict[str, Any] = {
        "benchmark": "gpu_check",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": args.seed,
        "cpu_smoke": args.cpu_smoke,
        "goal_img_s": GOAL_IMG_S,
        "machine": machine_info(),
        "stages": {},
    }
    print(f"seed={args.seed} files={args.files} sample={args.sample} smoke={args.cpu_smoke}")
    print(json.dumps(result["machine"]), flush=True)
    providers = result["machine"].get("ort_providers") or []
    device = "cuda" if not args.cpu_smoke and "CUDAExecutionProvider" in providers else "cpu"
    result["device"] = device
    sampler = GpuSampler().start() if not args.cpu_smoke else GpuSampler()
    if args.cpu_smoke:
        sampler.error = "not sampled (--cpu-smoke)"
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="gpu-check-")
        work = Path(tmp)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HEROES_MODEL_DIR", str(work / "models"))
    os.environ.setdefault("XDG_CACHE_HOME", str(work / "cache"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        evidence = work / "evidence"
        t0 = time.perf_counter()
        result["inputs"] = make_inputs(evidence, args.files, args.seed, workers)
        result["inputs"]["gpu"] = sampler.window(t0, time.perf_counter())
        print(f"inputs: {result['inputs']}", flush=True)
        paths = sorted(evidence.rglob("*.jpg"))
        st = Stages(paths, args.sample, device, workers)
        # the stages get what the end-to-end run does not need: it keeps at least 120 s
        e2e_reserve = 30.0 if args.cpu_smoke else 120.0
        stage_list: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("read", st.read),
            ("cpu_decode", st.cpu_decode),
            ("gpu_decode", st.gpu_decode),
            ("detector", st.detector),
            ("faces", st.faces),
            ("scene_embed", st.scene),
            ("analyzer", st.analyzer),
        ]
        for name, fn in stage_list:
            run_stage(result["stages"], name, fn, sampler, deadline, e2e_reserve)
        t0 = time.perf_counter()
        e2e = end_to_end(
            evidence,
            work,
            args.files,
            args.cpu_smoke,
            deadline.left() - 10,
            args.e2e_arg,
            args.e2e_scene,
        )
        e2e["gpu"] = sampler.window(t0, time.perf_counter())
        result["end_to_end"] = e2e
        print(f"end_to_end: {json.dumps(e2e)}", flush=True)
        # with time left, the same run with several model actors sharing the GPU
        if not args.cpu_smoke and e2e.get("rc") == 0 and deadline.left() > 80:
            t0 = time.perf_counter()
            var = end_to_end(
                evidence,
                work / "variant",
                args.files,
                False,
                deadline.left() - 10,
                [*args.e2e_arg, *args.e2e_variant],
                args.e2e_scene,
            )
            var["gpu"] = sampler.window(t0, time.perf_counter())
            result["end_to_end_variant"] = var
            print(f"end_to_end_variant: {json.dumps(var)}", flush=True)
    except Exception as exc:  # e.g. heroes' own dependencies missing: still write what we have
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        print(f"check stopped: {result['error']}", flush=True)
    finally:
        sampler.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result["gpu_sampler"] = sampler.error or f"{len(sampler.samples)} samples"
    rate = result.setdefault("end_to_end", {}).get("img_s_wall")
    result["goal_met"] = bool(rate and rate >= GOAL_IMG_S) if not args.cpu_smoke else None
    print_table(result)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")
    return result


def _rate(d: Any) -> str:
    return f"{d['per_s']:,.0f}/s" if isinstance(d, dict) and d.get("per_s") else "-"


def print_table(result: dict[str, Any]) -> None:
    s = result["stages"]
    rows: list[tuple[str, str, str]] = []

    def util(d: Any) -> str:
        g = d.get("gpu") if isinstance(d, dict) else None
        return f"{g['util_mean_pct']:.0f}% (max {g['util_max_pct']:.0f}%)" if g else "-"

    cpu = s.get("cpu_decode", {})
    for key, val in cpu.items():
        if isinstance(val, dict):
            rows.append((f"cpu {key}", _rate(val), util(cpu)))
    for key in ("batch_64", "batch_256"):
        if key in s.get("gpu_decode", {}):
            rows.append((f"gpu decode {key}", _rate(s["gpu_decode"][key]), util(s["gpu_decode"])))
    det = s.get("detector", {})
    for key in ("end_to_end", "model_only_256"):
        if key in det:
            rows.append((f"detector {key}", _rate(det[key]), util(det)))
    faces = s.get("faces", {})
    for key in ("landmarks_and_chips_cpu", "age", "face_embed"):
        if key in faces:
            rows.append((f"faces {key} (faces)", _rate(faces[key]), util(faces)))
    if "per_s" in s.get("scene_embed", {}):
        rows.append(("scene embedding", _rate(s["scene_embed"]), util(s["scene_embed"])))
    if "per_s" in s.get("analyzer", {}):
        rows.append(("analyzer (all models, one batch)", _rate(s["analyzer"]), util(s["analyzer"])))
    e2e = result.get("end_to_end", {})
    if e2e.get("img_s_wall"):
        rows.append(("END TO END triage --layout split", f"{e2e['img_s_wall']:,.0f}/s", util(e2e)))
    for name, val in s.items():
        if isinstance(val, dict) and ("error" in val or "skipped" in val):
            rows.append((name, val.get("error") or val.get("skipped") or "", ""))
    var = result.get("end_to_end_variant", {})
    if var.get("img_s_wall"):
        label = "END TO END " + " ".join(a for a in var["command"].split()[-1:])
        rows.append((label, f"{var['img_s_wall']:,.0f}/s", util(var)))
    if "error" in e2e:
        rows.append(("end to end", e2e["error"], ""))
    print(f"\n{'stage':44} {'rate':>14}  GPU utilisation")
    for name, rate, u in rows:
        print(f"{name:44} {rate:>14}  {u}")
    print(f"goal {GOAL_IMG_S:,.0f} images/s end to end: {result.get('goal_met')}")


if __name__ == "__main__":
    main()
