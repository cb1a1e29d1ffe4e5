"""The accuracy harness end to end on tiny labelled sets made from benign package photos and
synthetic images: dataset formats, metric plumbing, manifests by path and by fetched URL.

Labels here are synthetic: some benign photos are called "positive" only to drive the metric
plumbing, and fake scorers or tiny ONNX models made in the test control the scores. No image of
a real child is used; the stated ages of the adult sample photos only exercise the plumbing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from heroes.bench import accuracy, datasets
from heroes.bench.run import run_accuracy
from heroes.bench.scorers import FaceAge, load_spec
from heroes.cli import app
from heroes.demo import sample_photos

BINS = [0.25, *range(1, 81)]


def age_model(path: Path, sigma: float = 2.0) -> Path:
    """A tiny age "network": the mean red value / 3 is the age, as an 81-bin distribution.

    logits_j = (2 m c_j - c_j^2) / (2 sigma^2) with c_j = 3 * bin_j: softmax peaks at m / 3.
    """
    c = np.asarray(BINS, np.float32) * 3
    k = 1 / (2 * (3 * sigma) ** 2)
    w = np.zeros((3, 81), np.float32)
    w[0] = 2 * c * k
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 81])
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["l0"]),
        helper.make_node("Add", ["l0", "b"], ["l1"]),
        helper.make_node("Softmax", ["l1"], ["probabilities"], axis=1),
    ]
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
        helper.make_tensor("w", TensorProto.FLOAT, [3, 81], w.ravel().tolist()),
        helper.make_tensor("b", TensorProto.FLOAT, [81], (-(c**2) * k).tolist()),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "tiny-age", [x], [y], initializer=inits),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def age_manifest(folder: Path, name: str, file: str, sha: str, url: str | None = None) -> Path:
    lines = [
        f'name = "{name}"',
        'task = "age"',
        f'file = "{file}"',
        f'sha256 = "{sha}"',
        'licence = "Apache-2.0 (made in the test)"',
        *([f'url = "{url}"'] if url else []),
        "[input]",
        "size = [64, 64]",
        "mean = [0.0, 0.0, 0.0]",
        "scale = 1.0",
        'resize = "face_chip"',
        "[output]",
        'names = ["probabilities"]',
        'decoding = "age_bins"',
        f"bins = {json.dumps(BINS)}",
    ]
    p = folder / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


AGES = [3, 8, 12, 15, 16, 17, 20, 24, 33, 45, 60, 70]


def utk_set(folder: Path, shift: dict[int, int] | None = None) -> Path:
    """Synthetic flat images in UTKFace naming; red = 3 * (age + shift) drives the tiny model."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(AGES):
        red = 3 * (a + (shift or {}).get(a, 0))
        im = np.zeros((64, 64, 3), np.uint8)
        im[..., 0] = red
        Image.fromarray(im).save(folder / f"{a}_{i % 2}_0_2017010{i % 9}.png")
    (folder / "notes.png").write_bytes(b"not an image and not a UTKFace name")
    (folder / f"30_0_0_{'x' * 3}.png").write_bytes(b"\x89PNG broken")
    return folder


def run_cli(*args: str) -> dict:
    res = CliRunner().invoke(app, [*args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_age_bench_by_manifest_path_reads_utkface_and_counts_every_file(tmp_path: Path) -> None:
    model = age_model(tmp_path / "models" / "tiny-age.onnx")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    toml = age_manifest(tmp_path / "models", "tiny-age", "tiny-age.onnx", sha)
    # a face the model reads 10 years older (a 15-year-old read as 25), one 10 years younger
    data = utk_set(tmp_path / "utk", shift={15: 10, 45: -10})
    out = run_cli(
        "bench", "accuracy", "--task", "age", "--dataset", str(data), "--format", "utkface",
        "--model", str(toml), "--faces", "whole", "--json", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    (r,) = out["results"]
    assert r["model"] == "tiny-age"
    assert r["scored"] == len(AGES)
    assert r["unreadable"] == 1 and r["unlabelled"] == 1  # the broken PNG, the bad name
    reasons = " ".join(p["reason"] for p in r["problems"])
    assert "unreadable" in reasons and "AGE_GENDER_RACE" in reasons
    assert r["mae"] == pytest.approx(20 / 12, abs=0.3)
    assert r["cs@5"] == pytest.approx(10 / 12)
    assert r["mae_by_band"]["13-17"]["n"] == 3
    assert r["mae_by_band"]["13-17"]["mae"] == pytest.approx(10 / 3, abs=0.3)
    assert r["mae_by_band"]["18-25"]["mae"] == pytest.approx(0, abs=0.3)
    assert r["minors"] == 6 and r["adults"] == 6
    # P(minor) ranks every minor above every adult except the 15-year-old read as 25
    assert 0.75 < r["minor_roc_auc"] < 1.0
    assert r["minor_recall@5%fpr"] == pytest.approx(5 / 6)
    plots = r["plots"]
    assert any(p.endswith(".svg") for p in plots) and all(Path(p).stat().st_size for p in plots)
    assert (tmp_path / "out" / "result.json").is_file()
    assert "| tiny-age |" in (tmp_path / "out" / "table.md").read_text()
    table = CliRunner().invoke(app, ["bench", "accuracy", "--task", "age", "--dataset", str(data),
                                     "--format", "utkface", "--model", str(toml), "--faces",
                                     "whole"])  # fmt: skip
    assert table.exit_code == 0 and "| tiny-age | 12 | 0 |" in table.stdout
    assert "| MAE 0-12 |" in table.stdout and "2 samples not scored" in table.output


def test_a_set_of_only_broken_images_gives_an_empty_result_not_a_crash(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{20 + i}_0_0_x.jpg").write_bytes(b"\xff\xd8 broken")
    model = age_model(tmp_path / "m" / "a.onnx")
    toml = age_manifest(
        tmp_path / "m", "a", "a.onnx", hashlib.sha256(model.read_bytes()).hexdigest()
    )
    (r,) = run_accuracy("age", tmp_path, "utkface", [str(toml)], faces="whole")["results"]
    assert r["scored"] == 0 and r["unreadable"] == 3 and r["mae"] is None
    assert r["minor_roc_auc"] is None and len(r["problems"]) == 3


def test_a_downloadable_model_is_fetched_by_its_manifest_then_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = age_model(tmp_path / "elsewhere" / "published-age.onnx", sigma=6.0)
    sha = hashlib.sha256(elsewhere.read_bytes()).hexdigest()
    model_dir = tmp_path / "model-dir"
    model_dir.mkdir()
    monkeypatch.setenv("HEROES_MODEL_DIR", str(model_dir))
    age_manifest(model_dir, "remote-age", "remote-age.onnx", sha, url=elsewhere.as_uri())
    sharp = age_model(model_dir / "sharp-age.onnx", sigma=1.0)
    age_manifest(
        model_dir, "sharp-age", "sharp-age.onnx", hashlib.sha256(sharp.read_bytes()).hexdigest()
    )
    data = utk_set(tmp_path / "utk")

    res = CliRunner().invoke(app, ["bench", "accuracy", "--task", "age", "--dataset", str(data),
                                   "--format", "utkface", "--model", "remote-age", "--faces",
                                   "whole"])  # fmt: skip
    assert res.exit_code == 2 and "heroes models fetch remote-age" in res.output
    fetched = CliRunner().invoke(app, ["models", "fetch", "remote-age"])
    assert fetched.exit_code == 0, fetched.output

    out = run_cli(
        "bench", "accuracy", "--task", "age", "--dataset", str(data), "--format", "utkface",
        "--model", "remote-age", "--model", "sharp-age", "--faces", "whole", "--json",
    )  # fmt: skip
    by = {r["model"]: r for r in out["results"]}
    assert set(by) == {"remote-age", "sharp-age"}
    assert by["sharp-age"]["mae"] < 0.5  # the right age, sharply
    # the broad model is pulled towards the middle at the ends of the range
    assert by["remote-age"]["mae"] > by["sharp-age"]["mae"]
    assert "| remote-age |" in out["markdown"] and "| sharp-age |" in out["markdown"]


def test_appa_real_and_generic_csv_read_real_and_apparent_ages(tmp_path: Path) -> None:
    (tmp_path / "valid").mkdir()
    for n in ("000001.jpg", "000002.jpg"):
        (tmp_path / "valid" / n).write_bytes(b"x")
    csv_path = tmp_path / "gt_avg_valid.csv"
    csv_path.write_text(
        "file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age\n"
        "000001.jpg,38,36.1,5.2,35\n000002.jpg,40,50.3,4.1,old\n",
        encoding="utf-8",
    )
    ds = datasets.read_age(csv_path, "appa-real")
    assert [s.path for s in ds.samples] == [tmp_path / "valid" / "000001.jpg"]
    assert ds.samples[0].label == 35 and ds.samples[0].extra == {"apparent_age": 36.1}
    assert "not a number" in ds.problems[0]["reason"]
    g = tmp_path / "ages.csv"
    g.write_text("path,age\nvalid/000002.jpg,41\n", encoding="utf-8")
    (s,) = datasets.read_age(g, "csv").samples
    assert s.path == tmp_path / "valid" / "000002.jpg" and s.label == 41
    bad = tmp_path / "labels.csv"
    bad.write_text("path,label\na.jpg,1\n", encoding="utf-8")
    with pytest.raises(datasets.DatasetError, match="no age column"):
        datasets.read_age(bad, "csv")


class ByName:
    """A fake scorer: the score of a file is looked up by its name."""

    def __init__(self, scores: dict[str, float], threshold: float = 0.5) -> None:
        self.name, self.scores, self.threshold = "fake", scores, threshold

    def score(self, image: np.ndarray) -> float:
        return self.scores[str(int(image[0, 0, 0]))]


def test_nudity_bench_on_folders_matches_scikit_learn(tmp_path: Path) -> None:
    # benign package photos; "positive" is a synthetic label purely to drive the plumbing
    photos = sample_photos()
    names = sorted(photos)[:8]
    labels = [1, 0, 1, 0, 0, 1, 0, 0]
    scores = [0.9, 0.7, 0.6, 0.6, 0.2, 0.4, 0.1, 0.55]
    fake = ByName({str(i): s for i, s in enumerate(scores)})
    for i, (n, y) in enumerate(zip(names, labels, strict=True)):
        d = tmp_path / ("positive" if y else "negative")
        d.mkdir(exist_ok=True)
        a = photos[n][:32, :32].copy()
        a[0, 0, 0] = i  # the fake scorer's key
        Image.fromarray(a).save(d / f"{n}.png")
    ds = datasets.read_binary(tmp_path, "folders")
    res = accuracy.nudity(ds, fake, out=tmp_path / "out")
    y = [s.label for s in ds.samples]
    sc = [scores[int(datasets.load_rgb(s.path)[0, 0, 0])] for s in ds.samples]
    assert res["roc_auc"] == pytest.approx(roc_auc_score(y, sc))
    assert res["pr_auc"] == pytest.approx(average_precision_score(y, sc))
    # at 0.5: flagged 0.9 (+), 0.7 (-), 0.6 (+), 0.6 (-), 0.55 (-) -> P 2/5, R 2/3
    assert res["precision"] == pytest.approx(2 / 5) and res["recall"] == pytest.approx(2 / 3)
    assert res["f1"] == pytest.approx(2 * (0.4 * 2 / 3) / (0.4 + 2 / 3))
    assert [t["threshold"] for t in res["thresholds"]][:2] == [0.1, 0.2]
    assert res["positives"] == 3 and res["negatives"] == 5
    assert any(p.endswith(".png") for p in res["plots"])


def test_nudity_csv_labels_and_chosen_positive_class(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    p = tmp_path / "labels.csv"
    p.write_text("path,label\na.jpg,drawing\nb.jpg,neutral\nc.jpg,nsfw\n", encoding="utf-8")
    assert [s.label for s in datasets.read_binary(p, "csv").samples] == [0, 0, 1]
    assert [s.label for s in datasets.read_binary(p, "csv", ["drawing"]).samples] == [1, 0, 0]


class ByColour:
    """A fake embedder: the vector is the image's mean colour; no face on a black image."""

    name = "colour"

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        v = image.reshape(-1, 3).mean(axis=0).astype(np.float32)
        return None if not v.any() else v - 100


def test_face_verify_reads_lfw_pairs_and_counts_missed_faces(tmp_path: Path) -> None:
    root = tmp_path / "lfw"
    colours = {"Ann_A": (200, 20, 20), "Bob_B": (20, 200, 20), "Cy_C": (0, 0, 0)}
    for name, c in colours.items():
        (root / name).mkdir(parents=True)
        for k in (1, 2):
            a = np.zeros((24, 24, 3), np.uint8)
            a[...] = np.clip(np.asarray(c) + 5 * k, 0, 255) if any(c) else 0
            Image.fromarray(a).save(root / name / f"{name}_{k:04d}.jpg", quality=95)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "1\t3\nAnn_A\t1\t2\nBob_B\t1\t2\nCy_C\t1\t2\nAnn_A\t1\tBob_B\t2\nBob_B\t1\tAnn_A\t2\n",
        encoding="utf-8",
    )
    ds = datasets.read_pairs(pairs, "lfw")
    assert len(ds.pairs) == 5 and ds.pairs[0].a == root / "Ann_A" / "Ann_A_0001.jpg"
    res = accuracy.face_verify(ds, ByColour())
    assert res["pairs_missed"] == 1  # Cy_C: no face on either side
    assert res["pairs_scored"] == 4 and res["same"] == 2 and res["different"] == 2
    assert res["roc_auc"] == 1.0 and res["tar@far1e-3"] == 1.0 and res["accuracy_best"] == 1.0
    assert sum("no face found" in p["reason"] for p in res["problems"]) == 2


def test_search_bench_on_generated_transforms_with_the_offline_scene_model(
    tmp_path: Path,
) -> None:
    photos = sample_photos()
    small = {
        n: np.asarray(Image.fromarray(photos[n]).resize((256, 192)))
        for n in ("astronaut", "coffee", "chelsea", "rocket")
        if n in photos
    }
    assert len(small) >= 3
    listing = datasets.make_transform_set(small, tmp_path / "set", seed=1)
    result = run_accuracy("search", listing, "csv", ["scene-vlad"])
    (r,) = result["results"]
    assert r["images"] == 5 * len(small) and r["queries_scored"] == len(small)
    assert r["missed"] == 0
    # every transformed copy of a photo is closer to it than any other photo's copies
    assert r["recall@5"] >= 0.75 and r["mAP"] >= 0.7
    assert r["recall@1"] <= r["recall@5"] <= r["recall@10"]
    assert r["hit@1"] >= 0.75  # the nearest image is a copy of the query for most queries


def test_holidays_names_give_queries_and_groups(tmp_path: Path) -> None:
    for n in ("100000", "100001", "100100", "100101", "100102", "junk"):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{n}.jpg")
    ds = datasets.read_search(tmp_path, "holidays")
    assert [ds.samples[q].path.stem for q in ds.queries] == ["100000", "100100"]
    assert [s.label for s in ds.samples] == [1000, 1000, 1001, 1001, 1001]
    assert ds.problems[0]["reason"].startswith("name is not")


def test_real_age_model_with_face_detection_accounts_for_every_photo(tmp_path: Path) -> None:
    # adult benign package photos with stated ages, only to exercise the real model path
    photos = sample_photos()
    folder = tmp_path / "utk"
    folder.mkdir()
    Image.fromarray(photos["astronaut"]).save(folder / "40_1_0_20170101.jpg")
    Image.fromarray(photos["coffee"]).save(folder / "30_0_0_20170101.jpg")  # no face
    (r,) = run_accuracy("age", folder, "utkface", ["age-v1"])["results"]
    assert r["faces_found"] + r["faces_missed"] == 2
    assert r["faces_missed"] >= 1  # the coffee cup
    assert r["faces_found"] == 1 and r["mae_by_band"]["26-40"]["n"] == 1
    assert r["mae"] < 20  # the astronaut reads as an adult (about 33 in the field notes)


def test_a_model_of_the_wrong_task_and_a_missing_manifest_are_clear_errors(
    tmp_path: Path,
) -> None:
    res = CliRunner().invoke(app, ["bench", "accuracy", "--task", "age", "--dataset",
                                   str(tmp_path), "--format", "utkface", "--model",
                                   "nudenet-320n"])  # fmt: skip
    assert res.exit_code == 2
    (tmp_path / "1_0_0_x.png").write_bytes(b"x")
    res = CliRunner().invoke(app, ["bench", "accuracy", "--task", "age", "--dataset",
                                   str(tmp_path), "--format", "utkface", "--model",
                                   "nudenet-320n"])  # fmt: skip
    assert res.exit_code == 2 and "needs age" in res.output
    with pytest.raises(ValueError, match="no such manifest"):
        load_spec(tmp_path / "absent.toml")
    assert FaceAge(1.0, 0.5, (0, 0, 1, 1)).p_minor == 0.5
