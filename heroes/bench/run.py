"""``heroes bench accuracy`` as a library call: read the set once, run each model, one result."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from heroes.bench import accuracy, datasets
from heroes.bench.scorers import scorer_for


def read_dataset(
    task: str, path: Path, fmt: str, positive: Iterable[str] | None = None
) -> datasets.Dataset:
    if task == "age":
        return datasets.read_age(path, fmt)
    if task == "nudity":
        return datasets.read_binary(path, fmt, positive)
    if task == "face-verify":
        return datasets.read_pairs(path, fmt)
    if task == "search":
        return datasets.read_search(path, fmt)
    raise ValueError(f"unknown task {task!r}: age, nudity, face-verify or search")


def run_accuracy(
    task: str,
    dataset: Path,
    fmt: str,
    models: Sequence[Any],
    *,
    out: Path | None = None,
    faces: str = "detect",
    positive: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Each model (manifest name, TOML path, or a ready scorer object) on the same set.

    Returns ``{"task", "dataset", "results": [one result per model], "markdown"}`` and, with
    ``out``, writes it as ``result.json`` and the table as ``table.md`` there.
    """
    ds = read_dataset(task, Path(dataset), fmt, positive)
    if not ds.samples and not ds.pairs:
        raise ValueError(f"no samples in {dataset} ({fmt}); {len(ds.problems)} problems")
    results = []
    for m in models:
        scorer = scorer_for(task, m, faces=faces) if isinstance(m, str | Path) else m
        if task == "age":
            results.append(accuracy.age(ds, scorer, out=out))
        elif task == "nudity":
            results.append(accuracy.nudity(ds, scorer, out=out))
        elif task == "face-verify":
            results.append(accuracy.face_verify(ds, scorer, out=out))
        else:
            results.append(accuracy.search(ds, scorer))
    result: dict[str, Any] = {
        "task": task,
        "dataset": {"path": str(dataset), "format": fmt},
        "results": results,
        "markdown": accuracy.markdown_table(results),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if len(results) > 1 and task in ("nudity", "face-verify"):
            result["plots"] = _compare_roc(results, out, task)
        (out / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        (out / "table.md").write_text(result["markdown"] + "\n", encoding="utf-8")
    return result


def _compare_roc(results: list[dict[str, Any]], out: Path, task: str) -> list[str]:
    import numpy as np

    from heroes.bench.metrics import Curve
    from heroes.bench.plots import roc_plot

    curves = {}
    for r in results:
        roc = r.get("roc") or {}
        if roc.get("fpr"):
            t = np.asarray(roc["thresholds"], float)
            curves[r["model"]] = Curve(
                t, np.asarray(roc["fpr"], float), np.asarray(roc["tpr"], float), np.zeros_like(t)
            )
    return roc_plot(curves, out, f"{task}-roc-compare") if curves else []
