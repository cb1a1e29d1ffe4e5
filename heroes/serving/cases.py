"""The cases a service offers: subfolders of one root, opened once per process and kept open."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from heroes.serving.auth import valid_case_name
from heroes.store.db import DB_FILE, CaseStore, StoreError


class NoSuchCaseError(LookupError):
    """The name is not a case under the root (HTTP 404 for those allowed to ask)."""


class Cases:
    """Case folders under ``root``; a name is a plain folder name, never a path, and the folder
    may not be a symlink that leaves the root."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.db_url = db_url
        self._stores: dict[str, CaseStore] = {}
        self._lock = threading.Lock()

    def folder(self, name: str, *, must_exist: bool = True) -> Path:
        if not valid_case_name(name):
            raise NoSuchCaseError(name)
        path = self.root / name
        real = Path(os.path.realpath(path))
        if real.parent != self.root or real.name != name:
            raise NoSuchCaseError(name)
        if must_exist and not (real / DB_FILE).is_file() and self.db_url is None:
            raise NoSuchCaseError(name)
        if must_exist and not real.is_dir():
            raise NoSuchCaseError(name)
        return real

    def names(self) -> list[str]:
        out = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False) and valid_case_name(entry.name):
                if (Path(entry.path) / DB_FILE).is_file():
                    out.append(entry.name)
        return out

    def store(self, name: str) -> CaseStore:
        """The case's store, opened on first use and kept for the life of the process."""
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                folder = self.folder(name)
                try:
                    store = CaseStore(folder, self.db_url, create=False)
                except StoreError:  # a first triage creating the tables at this moment
                    time.sleep(0.5)
                    store = CaseStore(folder, self.db_url, create=False)
                self._stores[name] = store
            return store

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
