"""Settings in one place: only heroes.config reads ``HEROES_*``; everything else is passed down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import heroes
from heroes.config import Settings
from heroes.pipeline.runner import model_plan
from heroes.pipeline.summary import TriageSummary

PACKAGE = Path(heroes.__file__).parent


def _environment_reads(path: Path) -> list[str]:
    """``HEROES_*`` names a module reads from the environment itself."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("HEROES_") and len(node.value) > len("HEROES_"):
                found.append(node.value)
    return found


@pytest.mark.parametrize("part", ["models", "pipeline", "index", "store"])
def test_the_model_and_pass_code_reads_no_heroes_variable_from_the_environment(part: str) -> None:
    readers = {
        str(p.relative_to(PACKAGE)): names
        for p in sorted((PACKAGE / part).rglob("*.py"))
        if (names := _environment_reads(p))
    }
    assert readers == {}, "settings come from heroes.config.Settings, passed down"


def test_model_names_threads_and_folders_are_settings_passed_to_the_models(tmp_path: Path) -> None:
    settings = Settings(
        detector_model="no-such-detector",
        age_model="age-v1",
        scene_model="",
        ort_threads=3,
        model_dir=tmp_path / "models",
        device="cpu",
        int8=False,
    )
    summary = TriageSummary(1, "ev", "case")
    plan = model_plan(settings, summary)
    assert plan is not None
    # an unknown detector turns the face branch off, and the summary says why
    assert plan.detector is None and plan.landmarks is None and plan.age is None
    assert summary.models["no-such-detector"] == "no manifest"
    assert plan.threads == 3 and plan.device == "cpu"
    assert plan.model_dir == str(tmp_path / "models")
    from heroes.models import registry
    from heroes.pipeline.infer import Analyzer

    before = registry.model_dir()
    try:
        Analyzer(plan)  # what a worker process does with the options it is handed
        assert registry.model_dir() == tmp_path / "models"
    finally:
        registry.set_model_dir(None)
    assert registry.model_dir() == before


def test_the_environment_reaches_the_models_through_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEROES_ORT_THREADS", "2")
    monkeypatch.setenv("HEROES_DEVICE", "cpu")
    monkeypatch.setenv("HEROES_DETECTOR_MODEL", "nudenet-320n")
    monkeypatch.setenv("HEROES_TRT_CACHE", str(tmp_path / "trt"))
    s = Settings()
    assert (s.ort_threads, s.device, s.detector_model) == (2, "cpu", "nudenet-320n")
    plan = model_plan(s.model_copy(update={"scene_model": "", "int8": False}))
    assert plan is not None and plan.threads == 2 and plan.trt_cache == str(tmp_path / "trt")
    from heroes.models import runtime

    runtime.set_trt_cache(None)
