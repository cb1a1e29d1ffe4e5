"""The Ray plan's workers: what travels between the driver and them, and the actors themselves.

Kept apart from :mod:`heroes.pipeline.raypass` (the driver) so that a Ray worker process imports
only what reading, hashing, decoding and the models need: not the case store, the indexes or the
pass core.
"""

from __future__ import annotations

from dataclasses import dataclass

from heroes.pipeline.analyze import (
    Analysis,
    AnalyzeOptions,
    Decoded,
    _models,
    decode_media,
    infer_many,
)
from heroes.pipeline.identify import Identified, StreamSource, identify_source

# --------------------------------------------------------------------------------------------------
# what travels


@dataclass(slots=True)
class Ref:
    """One file sent to the plan: a path on disk, or the bytes of an archive member."""

    key: int
    path: str
    fs_path: str | StreamSource | None
    data: bytes | None
    is_archive: bool
    entry_error: str | None
    update_of: int | None
    old_sha: str | None


@dataclass(slots=True)
class FileResult:
    """What the plan hands back for one file: its hashes, the driver's verdict on it, and (when
    this worker decoded it) its :class:`~heroes.pipeline.analyze.Analysis`.

    ``verdict`` is None when the file needs no pixels (nothing to decode), ``decode``,
    ``duplicate`` (``owner`` is the key of the file of this run that claimed the content, None when
    the case held it before) or ``known_good``."""

    key: int
    ident: Identified
    verdict: str | None
    owner: int | None
    analysis: Analysis | None
    node: str = ""
    infer_node: str | None = None


# --------------------------------------------------------------------------------------------------
# the plan's stages (run in Ray workers)


#: what a stage hands on per file: its result, and (split plan, before the models) its frames
Pair = tuple[FileResult, Decoded | None]


@dataclass(slots=True)
class _Work:
    """A file inside a worker between its two calls: what it was sent and what hashing found."""

    ref: Ref
    ident: Identified
    #: the hashes as they travel (the bytes stay here)
    bare: Identified


def _node() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())[:12]


class Reader:
    """Reads, hashes and decodes files, in two calls per batch: :meth:`hash` (the driver then
    decides which files to decode) and :meth:`analyse`. The fused plan's readers also run the
    models (one actor per CPU, ORT one thread); the split plan's hand the frames on to the model
    actors. A batch's bytes stay here between the two calls."""

    def __init__(self, opts: AnalyzeOptions, chunk: int, infer: bool) -> None:
        self.opts, self.chunk, self.infer = opts, chunk, infer
        self.node = _node()
        self.held: dict[int, list[_Work]] = {}

    def ready(self) -> str:
        return self.node

    def hash(self, bid: int, refs: list[Ref]) -> list[Identified]:
        works = []
        for r in refs:
            ident = identify_source(r.data, r.fs_path, r.is_archive, self.chunk)
            works.append(_Work(r, ident, ident.without_data()))
        self.held[bid] = works
        return [w.bare for w in works]

    def analyse(self, bid: int, verdicts: list[tuple[str | None, int | None]]) -> list[Pair] | None:
        """Decode (and in the fused plan, run the models on, in batches across the files) what
        the driver gave this batch to decode. None when this actor does not hold the batch (it
        was restarted since :meth:`hash`)."""
        works = self.held.pop(bid, None)
        if works is None:
            return None
        out: list[Pair] = []
        decoded: list[tuple[int, Decoded]] = []
        for w, (verdict, owner) in zip(works, verdicts, strict=True):
            result = FileResult(w.ref.key, w.bare, verdict, owner, None, self.node)
            out.append((result, None))
            if verdict == "decode":
                d = decode_media(w.ident.media_type, w.ident.data, w.ref.fs_path, self.opts)
                if d.frames or self.infer:
                    decoded.append((len(out) - 1, d))
                else:  # nothing for the model actors
                    result.analysis = Analysis(dict(d.fields))
        if self.infer:
            done = infer_many([d for _i, d in decoded], self.opts)
            for (i, _d), analysis in zip(decoded, done, strict=True):
                out[i][0].analysis = analysis
        else:
            for i, d in decoded:
                out[i] = (out[i][0], d)
        return out


class InferWorker:
    """The split layout's model stage: one actor per GPU (or as asked), sessions loaded once;
    the frames of every file of a batch go through the models together."""

    def __init__(self, opts: AnalyzeOptions) -> None:
        self.opts = opts
        self.node = _node()
        _models(opts)

    def ready(self) -> str:
        return self.node

    def run(self, pairs: list[Pair] | None) -> list[Pair] | None:
        if pairs is None:  # the reader had lost the batch: the driver sends it again
            return None
        todo = [(r, d) for r, d in pairs if d is not None]
        for (r, _d), analysis in zip(
            todo, infer_many((d for _r, d in todo if d is not None), self.opts), strict=True
        ):
            r.analysis, r.infer_node = analysis, self.node
        return [(r, None) for r, _d in pairs]
