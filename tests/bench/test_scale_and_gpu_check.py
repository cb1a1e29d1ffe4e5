"""benchmarks/bench_scale.py (the 1M-file plan's measurements) on tiny inputs, and
benchmarks/gpu_check.sh in its CPU smoke mode (the GPU check's every step, on 100 files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_scale  # noqa: E402
import gpu_check  # noqa: E402


def test_duplicate_map_sizes_rank_the_compact_forms() -> None:
    out = bench_scale.dup_map(5000, seed=1)
    per = {k: v["bytes_per_entry"] for k, v in out.items() if isinstance(v, dict)}
    # 64-char str keys + int ids in a dict, then 32-byte bytes keys, then fixed-width arrays
    assert per["dict_hex_str"] > per["dict_digest_bytes"] > 100
    # array headers are a few hundred bytes for the whole map
    assert per["numpy_sorted_digest32_id64"] == pytest.approx(40.0, abs=0.2)
    assert per["numpy_sorted_prefix8_id64"] == pytest.approx(16.0, abs=0.2)
    assert out["dict_hex_str"]["at_files_mib"]["1000000"] == pytest.approx(
        per["dict_hex_str"] * 1e6 / 2**20, rel=0.01
    )


def test_per_file_cpu_counts_each_stage(tmp_path: Path) -> None:
    out = bench_scale.per_file_cpu(6, seed=0, work=tmp_path, repeat=1)
    ms = out["ms"]
    assert set(ms) == {
        "md5_sha1_sha256",
        "decode_to_512",
        "pdq_with_dihedral",
        "analyze_image",
        "models_without_scene",
        "models_all_five",
    }
    assert all(v > 0 for v in ms.values())
    # analyze_image decodes and hashes with PDQ: it costs at least its decode
    assert ms["analyze_image"] >= ms["decode_to_512"] * 0.8
    cores = out["cores_for_3000_img_s"]
    assert cores["cpu_decode"] > cores["gpu_decode"] > 0
    assert 0 < out["cpu_only_images_per_core_s"] < 1000 / ms["analyze_image"]


@pytest.fixture(scope="module")
def sizes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("scale")
    # PostgreSQL for the run without models only: the model run's rows take the same code path
    return bench_scale.store_sizes(work, 10, 4, seed=0, pg=True, pg_models=False), work


def test_store_sizes_count_every_item_and_measure_both_stores(
    sizes: tuple[dict[str, Any], Path],
) -> None:
    out, _work = sizes
    for label, images in (("no_models", 10), ("models", 4)):
        res = out[label]
        copies, others = images // 5, images // 5
        assert res["counts"]["items"] == images + copies + others
        assert res["counts"]["status"].get("duplicate", 0) == copies
        for store in ("sqlite", "postgresql") if label == "no_models" else ("sqlite",):
            written = res[store]["as_written"]
            assert written["items_tables_bytes_per_item"] > 200
            assert written["tables"]["items"] > 0
        assert res["sqlite"]["file_bytes_after_vacuum"] <= res["sqlite"]["file_bytes"]
    assert set(out["no_models"]["postgresql"]["pg_total_relation_size"]) == {"items", "vectors"}
    assert "postgresql" not in out["models"]
    vectors = out["models"]["counts"]["vectors"]
    assert vectors.get("scene") == 4  # one scene vector per image
    assert out["models"]["sqlite"]["as_written"]["vectors_tables_bytes_per_vector"] > 512
    assert out["no_models"]["counts"]["vectors"] == {}


def test_finalize_times_grow_with_the_case(sizes: tuple[dict[str, Any], Path]) -> None:
    _out, work = sizes
    res = bench_scale.finalize_times([300, 600], work / "case-models", seed=0, work=work)
    assert set(res["sizes"]) == {"300", "600"}
    assert res["sizes"]["300"]["rank_items_peak_python_bytes_per_item"] > 0
    assert res["pdq_pair_scan"]["comparisons_per_cpu_s"] > 0
    assert res["finalize_cpu_hours_at"]["10000000"] >= res["finalize_cpu_hours_at"]["1000000"]


def test_index_builds_report_each_kind(tmp_path: Path) -> None:
    out = bench_scale.index_builds([2000], seed=0, work=tmp_path)["2000"]
    assert set(out) == {"pdq", "face", "face_in_20k_chunks", "scene"}
    assert out["pdq"]["type"] == "flat" and out["face"]["type"] == "flat"
    assert out["pdq"]["bytes"] >= 2000 * 32 and out["face"]["bytes"] >= 2000 * 128 * 4


def test_gpu_sampler_window_averages_its_own_samples() -> None:
    s = gpu_check.GpuSampler()
    s.samples = [(1.0, 10.0, 100.0), (2.0, 90.0, 300.0), (3.0, 50.0, 200.0), (9.0, 0.0, 0.0)]
    w = s.window(1.5, 3.5)
    assert w == {"util_mean_pct": 70.0, "util_max_pct": 90.0, "memory_max_mib": 300.0, "samples": 2}
    assert s.window(4.0, 5.0) is None


def test_gpu_check_cpu_smoke_runs_every_step_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PY": sys.executable, "GPU_CHECK_SECONDS": "150"}
    env.pop("OUT", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
    )
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["cpu_smoke"] is True and res["device"] == "cpu"
    assert res["inputs"]["files"] == 100
    stages = res["stages"]
    assert list(stages) == [
        "read",
        "cpu_decode",
        "gpu_decode",
        "detector",
        "faces",
        "scene_embed",
        "analyzer",
    ]
    for name, val in stages.items():
        assert "error" not in val, (name, val)
    assert "skipped" in stages["gpu_decode"]  # no CUDA here
    assert stages["detector"]["end_to_end"]["per_s"] > 0
    assert stages["cpu_decode"]["decode_one_core"]["per_s"] > 0
    e2e = res["end_to_end"]
    assert e2e["rc"] == 0 and e2e["summary"]["new"] == 100, e2e
    assert e2e["summary"]["ray"]["layout"] == "split"
    assert "scene-vlad" not in e2e["summary"]["models"]  # the CPU scene model is left out
    assert e2e["img_s_wall"] > 0
    assert "images/s end to end" in proc.stdout and "END TO END" in proc.stdout
    assert took < 170
