"""What a triage run did: the summary people read in the CLI's table and machines read as JSON,
and the progress bar shown while it runs."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TriageSummary:
    """What a run did, for people (the CLI's table) and machines (``to_dict``)."""

    run_id: int
    evidence: str
    case: str
    new: int = 0
    resumed: int = 0
    updated: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    by_type_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    matches: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    hashsets_imported: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    faces: int = 0
    items_with_faces: int = 0
    likely_minor_faces: int = 0
    explicit: int = 0
    indexed: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    engine: str = "local"
    frames: int = 0
    #: files done per Ray node, and files the driver redid after the plan lost them
    nodes: Counter[str] = field(default_factory=Counter)
    redone: int = 0
    ray: dict[str, Any] = field(default_factory=dict)
    #: doubts a person must see, e.g. a hash set that may not be what it was read as
    warnings: list[str] = field(default_factory=list)

    @property
    def files_per_second(self) -> float:
        return self.new / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "evidence": self.evidence,
            "case": self.case,
            "new": self.new,
            "already_done": self.resumed,
            "updated": self.updated,
            "bytes": self.bytes,
            "elapsed_s": round(self.elapsed, 3),
            "files_per_s": round(self.files_per_second, 2),
            "by_type_status": [
                {"media_type": m, "status": s, "count": n}
                for (m, s), n in sorted(self.by_type_status.items())
            ],
            "errors": dict(self.errors.most_common()),
            "matches": [
                {"hashset": h, "category": c, "method": m, "count": n}
                for (h, c, m), n in sorted(self.matches.items())
            ],
            "hashsets_imported": self.hashsets_imported,
            "models": self.models,
            "faces": self.faces,
            "items_with_faces": self.items_with_faces,
            "likely_minor_faces": self.likely_minor_faces,
            "explicit": self.explicit,
            "indexed": self.indexed,
            "interrupted": self.interrupted,
            "engine": self.engine,
            "frames": self.frames,
            "frames_per_s": round(self.frames / self.elapsed, 2) if self.elapsed > 0 else 0.0,
            "ray": {**self.ray, "files_per_node": dict(self.nodes), "redone": self.redone}
            if self.engine == "ray"
            else None,
            "warnings": self.warnings,
        }


def error_kind(error: str) -> str:
    """The kind of an error text: what stands before its first colon (``zip bomb: ...``)."""
    return error.split(":", 1)[0].strip()[:80] or "error"


class Progress:
    """A rich progress bar on a terminal (files/s, bytes, ETA); silent otherwise."""

    def __init__(self, enabled: bool, total_bytes: int) -> None:
        self.files = 0
        self.frames = 0
        self._bar: Any = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]triage"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn(
                "{task.fields[files]} files, {task.fields[rate]} files/s, "
                "{task.fields[frate]} frames/s"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._bar.add_task(
            "triage", total=total_bytes or None, files=0, rate="0", frate="0"
        )
        self._t0 = time.perf_counter()
        self._bar.start()

    def advance(self, nbytes: int, files: int = 1) -> None:
        self.files += files
        if self._bar is not None:
            dt = max(1e-6, time.perf_counter() - self._t0)
            self._bar.update(
                self._task,
                advance=nbytes,
                files=self.files,
                rate=f"{self.files / dt:.0f}",
                frate=f"{self.frames / dt:.0f}",
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
