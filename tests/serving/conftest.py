"""A small served root for the API tests: the demo seizure triaged into case ``demo`` and two
benign photos into case ``other`` (local engine, real models on CPU), users and keys of every role,
and a TestClient over the app."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from served import SECRET, Served, make_keys

from heroes.config import Settings
from heroes.demo import build_demo, jpeg_bytes, sample_photos
from heroes.pipeline.runner import triage
from heroes.serving.app import create_app
from heroes.serving.db import ServiceDB
from heroes.serving.settings import ServeSettings

_spec = importlib.util.spec_from_file_location(
    "_store_conftest", Path(__file__).parent.parent / "store" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_store_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_store_conftest)
pg_url = _store_conftest.pg_url  # the throw-away PostgreSQL server of the store tests


@pytest.fixture(scope="session")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Served:
    base = tmp_path_factory.mktemp("served")
    evidence = base / "evidence"
    build_demo(evidence / "demo", base / "hashsets")
    other = evidence / "other"
    other.mkdir()
    photos = sample_photos()
    (other / "astronaut.jpg").write_bytes(jpeg_bytes(photos["astronaut"]))
    (other / "coffee.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    root = base / "cases"
    core = Settings()
    triage(
        evidence / "demo",
        root / "demo",
        settings=core,
        hashsets=[base / "hashsets" / "known-bad.vics.json"],
    )
    triage(other, root / "other", settings=core)
    settings = ServeSettings(root=root, secret_key=SECRET, preload_models=False)
    db = ServiceDB(settings.service_db_url())
    keys = make_keys(db, SECRET)
    db.close()
    return Served(root, evidence, keys, settings)


@pytest.fixture(scope="session")
def client(served_root: Served) -> Iterator[TestClient]:
    with TestClient(create_app(served_root.settings)) as c:
        yield c


@pytest.fixture
def fresh_root(tmp_path: Path, served_root: Served) -> Served:
    """A root of its own (its own service database) holding a copy of case ``other``."""
    root = tmp_path / "cases"
    shutil.copytree(served_root.root / "other", root / "other")
    settings = ServeSettings(root=root, secret_key=SECRET, preload_models=False)
    db = ServiceDB(settings.service_db_url())
    keys = make_keys(db, SECRET)
    db.close()
    return Served(root, served_root.evidence, keys, settings)
