"""Access to one case's store: a SQLite file in the case folder, or PostgreSQL by URL."""

from __future__ import annotations

import platform
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, insert, inspect, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from heroes import __version__
from heroes.store.schema import (
    SCHEMA_VERSION,
    Base,
    CaseInfoRow,
    HashEntryRow,
    HashSetRow,
    ItemRow,
    LabelRow,
    MetaRow,
    RunRow,
    VectorRow,
)

DB_FILE = "case.db"
_INSERT_CHUNK = 5000
#: rows :meth:`CaseStore.pages` reads at a time
PAGE_ROWS = 20_000


class StoreError(RuntimeError):
    """The case store cannot be opened or written."""


class SchemaMismatch(StoreError):
    """The case was made by a version of heroes whose store schema differs from this one's."""


@dataclass(frozen=True, slots=True)
class HashSetMeta:
    id: int
    name: str
    scheme: str
    categories: dict[str, str]
    known_good: bool


@dataclass(frozen=True, slots=True)
class Existing:
    id: int
    size: int | None
    mtime: float | None
    sha256: str | None
    status: str
    archive_complete: bool


def case_db_url(case_dir: Path, db_url: str | None = None) -> str:
    return db_url or f"sqlite:///{(case_dir / DB_FILE).resolve()}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _store_problem(engine: Engine, exc: OperationalError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    if "readonly" in text or "read-only" in text:
        return f"case store {engine.url.database or engine.url} is read-only: {text}"
    return f"cannot open case store {engine.url!r}: {exc}"


class CaseStore:
    """One case: its items, hash sets and runs. Safe to reopen; every write is a transaction."""

    def __init__(self, case_dir: Path, db_url: str | None = None, *, create: bool = True) -> None:
        self.case_dir = Path(case_dir)
        if create:
            try:
                self.case_dir.mkdir(parents=True, exist_ok=True)
                probe = self.case_dir / ".write-test"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise StoreError(
                    f"case folder {self.case_dir} is not writable: {exc.strerror}"
                ) from exc
        elif not (db_url or (self.case_dir / DB_FILE).exists()):
            raise StoreError(f"no case at {self.case_dir} (no {DB_FILE})")
        self.url = case_db_url(self.case_dir, db_url)
        self.engine: Engine = create_engine(self.url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            had_items = inspect(self.engine).has_table(ItemRow.__tablename__)
            Base.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise StoreError(_store_problem(self.engine, exc)) from exc
        except Exception as exc:  # a broken URL or an unreachable server
            raise StoreError(f"cannot open case store {self.engine.url!r}: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._check_schema(had_items, create)
        self._hashsets: dict[int, HashSetMeta] | None = None

    def _check_schema(self, had_items: bool, create: bool) -> None:
        """Refuse a case of another schema version; a case opened for writing is written to once
        here (its version), so a read-only store is refused before any work starts."""
        try:
            version: int | None = None
            if inspect(self.engine).has_table(MetaRow.__tablename__):
                with self.session() as s:
                    text = s.get(MetaRow, "schema_version")
                    version = int(text.value) if text is not None else None
            if version is None and had_items:
                version = 1  # made before the store recorded its version
            if version is not None and version != SCHEMA_VERSION:
                age = "an older" if version < SCHEMA_VERSION else "a newer"
                raise SchemaMismatch(
                    f"case {self.case_dir} was made by {age} heroes (store schema {version}; "
                    f"this one reads schema {SCHEMA_VERSION}): triage the evidence into a new case"
                )
            if create:
                # an UPDATE that changes nothing still needs the write lock: a read-only store
                # fails here, before a run starts
                with self.session() as s, s.begin():
                    done = s.execute(
                        update(MetaRow)
                        .where(MetaRow.key == "schema_version")
                        .values(value=str(SCHEMA_VERSION))
                    )
                    if not done.rowcount:  # type: ignore[attr-defined]
                        s.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
        except OperationalError as exc:
            raise StoreError(_store_problem(self.engine, exc)) from exc

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        self.engine.dispose()

    # runs ---------------------------------------------------------------------------------------
    def start_run(self, evidence: str, settings: dict[str, Any]) -> int:
        """Record a run's start, with its settings and, for the chain of custody, the tool
        version and the host it runs on (``settings["provenance"]``)."""
        provenance = {
            "heroes": __version__,
            "host": platform.node(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        with self.session() as s, s.begin():
            run = RunRow(evidence=evidence, settings={**settings, "provenance": provenance})
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, stats: dict[str, Any], status: str = "done") -> None:
        with self.session() as s, s.begin():
            s.execute(
                update(RunRow)
                .where(RunRow.id == run_id)
                .values(stats=stats, status=status, finished_at=datetime.now(UTC))
            )

    # items --------------------------------------------------------------------------------------
    def existing(self, evidence: str, path: str) -> Existing | None:
        with self.session() as s:
            row = s.execute(
                select(
                    ItemRow.id,
                    ItemRow.size,
                    ItemRow.mtime,
                    ItemRow.sha256,
                    ItemRow.status,
                    ItemRow.archive_complete,
                ).where(ItemRow.evidence == evidence, ItemRow.path == path)
            ).first()
        return Existing(*row) if row else None

    def first_with_sha256(self, sha256: str) -> int | None:
        with self.session() as s:
            return s.execute(
                select(func.min(ItemRow.id)).where(
                    ItemRow.sha256 == sha256, ItemRow.status.not_in(("duplicate", "skipped"))
                )
            ).scalar()

    def insert_and_update(
        self,
        new: Sequence[dict[str, Any]],
        changed: Sequence[dict[str, Any]] = (),
        vectors: Sequence[dict[str, Any]] = (),
        replace_vectors: Sequence[int] = (),
    ) -> None:
        """Insert new item rows, update changed ones (rows carry their ``id``) and store
        embeddings, in one transaction; ``replace_vectors`` items lose their old embeddings."""
        with self.session() as s, s.begin():
            if new:
                s.execute(insert(ItemRow), list(new))
            if changed:
                s.execute(update(ItemRow), list(changed))
            if replace_vectors:
                s.execute(delete(VectorRow).where(VectorRow.item_id.in_(list(replace_vectors))))
            if vectors:
                s.execute(insert(VectorRow), list(vectors))

    def update_items(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            with self.session() as s, s.begin():
                s.execute(update(ItemRow), list(rows))

    def mark_archives_complete(self, evidence: str, paths: Iterable[str]) -> None:
        paths = list(paths)
        with self.session() as s, s.begin():
            for i in range(0, len(paths), 500):
                s.execute(
                    update(ItemRow)
                    .where(ItemRow.evidence == evidence, ItemRow.path.in_(paths[i : i + 500]))
                    .values(archive_complete=True)
                )

    def items(self, *, order: str = "rank") -> Iterator[ItemRow]:
        key = (
            (ItemRow.rank.is_(None), ItemRow.rank, ItemRow.id) if order == "rank" else (ItemRow.id,)
        )
        with self.session() as s:
            yield from s.execute(
                select(ItemRow).order_by(*key).execution_options(yield_per=1000)
            ).scalars()

    def pages(self, key: Any, *cols: Any, where: Any = None, after: int = 0) -> Iterator[list[Any]]:
        """Rows of ``key``'s table (``key``, an integer primary key, first, then ``cols``) in
        ``key`` order after ``after``, :data:`PAGE_ROWS` at a time. Keyset pages: each page is one
        short query, so no cursor stays open while the caller writes, and memory holds one page
        whatever the case's size."""
        while True:
            query = select(key, *cols).where(key > after)
            if where is not None:
                query = query.where(where)
            with self.session() as s:
                rows = list(s.execute(query.order_by(key).limit(PAGE_ROWS)).all())
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def count_members(self, evidence: str, archive_path: str) -> int:
        """Items inside an archive, nested ones included."""
        prefix = archive_path + "!/"
        with self.session() as s:
            return s.execute(
                select(func.count(ItemRow.id)).where(
                    ItemRow.evidence == evidence,
                    func.substr(ItemRow.path, 1, len(prefix)) == prefix,
                )
            ).scalar_one()

    def has_evidence(self, evidence: str) -> bool:
        with self.session() as s:
            return (
                s.execute(select(ItemRow.id).where(ItemRow.evidence == evidence).limit(1)).first()
                is not None
            )

    def count_items(self) -> int:
        with self.session() as s:
            return s.execute(select(func.count(ItemRow.id))).scalar_one()

    # hash sets ----------------------------------------------------------------------------------
    def hashset_with_source(self, source_sha256: str) -> HashSetRow | None:
        with self.session() as s:
            return s.execute(
                select(HashSetRow).where(HashSetRow.source_sha256 == source_sha256)
            ).scalar_one_or_none()

    def add_hashset(
        self, info: Any, entries: Iterable[Any], stats: Any, source_sha256: str
    ) -> HashSetRow:
        """Store a parsed hash set (see :mod:`heroes.pipeline.hashsets`), streaming its entries."""
        with self.session() as s, s.begin():
            name = info.name
            taken = set(s.execute(select(HashSetRow.name)).scalars())
            n = 2
            while name in taken:
                name, n = f"{info.name}-{n}", n + 1
            row = HashSetRow(
                name=name,
                format=info.format,
                scheme=info.scheme,
                categories=dict(info.categories),
                known_good=bool(info.known_good),
                source=info.source,
                source_sha256=source_sha256,
                meta=dict(info.meta),
            )
            s.add(row)
            s.flush()
            batch: list[dict[str, Any]] = []
            for e in entries:
                batch.append(
                    {
                        "hashset_id": row.id,
                        "md5": e.md5,
                        "sha1": e.sha1,
                        "sha256": e.sha256,
                        "pdq": e.pdq,
                        "category": e.category,
                        "label": e.label,
                        "ref": e.ref,
                        "meta": e.meta or None,
                    }
                )
                if len(batch) >= _INSERT_CHUNK:
                    s.execute(insert(HashEntryRow), batch)
                    batch.clear()
            if batch:
                s.execute(insert(HashEntryRow), batch)
            row.entries = stats.entries
            row.rejected = stats.rejected
            row.meta = {**row.meta, "rejects": list(stats.rejects)[:20]}
        self._hashsets = None
        return row

    def hashsets(self) -> dict[int, HashSetMeta]:
        if self._hashsets is None:
            with self.session() as s:
                rows = s.execute(select(HashSetRow)).scalars().all()
            self._hashsets = {
                r.id: HashSetMeta(r.id, r.name, r.scheme, dict(r.categories), r.known_good)
                for r in rows
            }
        return self._hashsets

    def hashset_rows(self) -> list[HashSetRow]:
        with self.session() as s:
            return list(s.execute(select(HashSetRow).order_by(HashSetRow.id)).scalars())

    def match_exact(
        self, md5: str, sha1: str, sha256: str
    ) -> list[tuple[HashSetMeta, HashEntryRow, str]]:
        """Every hash-set entry that names this file by any of its three hashes."""
        if not self.hashsets():
            return []
        with self.session() as s:
            rows = (
                s.execute(
                    select(HashEntryRow).where(
                        or_(
                            HashEntryRow.md5 == md5,
                            HashEntryRow.sha1 == sha1,
                            HashEntryRow.sha256 == sha256,
                        )
                    )
                )
                .scalars()
                .all()
            )
        out = []
        for e in rows:
            method = "sha256" if e.sha256 == sha256 else "sha1" if e.sha1 == sha1 else "md5"
            out.append((self.hashsets()[e.hashset_id], e, method))
        return out

    def pdq_entries(self) -> list[HashEntryRow]:
        """Every hash-set entry that carries a PDQ hash."""
        with self.session() as s:
            rows = list(
                s.execute(select(HashEntryRow).where(HashEntryRow.pdq.is_not(None))).scalars()
            )
        return rows

    # labels -------------------------------------------------------------------------------------
    def item_sha256(self, item_ids: Iterable[int]) -> dict[int, str | None]:
        """The SHA-256 of each of these items that exists (a missing id is not in the answer)."""
        ids = sorted(set(item_ids))
        out: dict[int, str | None] = {}
        with self.session() as s:
            for i in range(0, len(ids), 500):
                rows = s.execute(
                    select(ItemRow.id, ItemRow.sha256).where(ItemRow.id.in_(ids[i : i + 500]))
                )
                out.update({item_id: sha for item_id, sha in rows})
        return out

    def items_with_sha256(self, shas: Iterable[str]) -> dict[int, str]:
        """Every item whose SHA-256 is one of these, by item id."""
        wanted = sorted(set(shas))
        out: dict[int, str] = {}
        with self.session() as s:
            for i in range(0, len(wanted), 500):
                rows = s.execute(
                    select(ItemRow.id, ItemRow.sha256).where(
                        ItemRow.sha256.in_(wanted[i : i + 500])
                    )
                )
                out.update({item_id: sha for item_id, sha in rows})
        return out

    def add_labels(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append label rows in one transaction; label rows are never updated or deleted."""
        if rows:
            try:
                with self.session() as s, s.begin():
                    s.execute(insert(LabelRow), list(rows))
            except SQLAlchemyError as exc:
                raise StoreError(
                    f"cannot write labels to {self.case_dir}: {exc.orig or exc}"
                ) from exc

    def label_rows(
        self, item_ids: Iterable[int] | None = None, shas: Iterable[str] = ()
    ) -> list[LabelRow]:
        """Label rows of these items or of these SHA-256s (all rows when ``item_ids`` is None),
        oldest first."""
        with self.session() as s:
            if item_ids is None:
                return list(s.execute(select(LabelRow).order_by(LabelRow.id)).scalars())
            ids, wanted = sorted(set(item_ids)), sorted(set(shas))
            found: dict[int, LabelRow] = {}
            for i in range(0, len(ids), 500):
                q = select(LabelRow).where(LabelRow.item_id.in_(ids[i : i + 500]))
                found.update({r.id: r for r in s.execute(q).scalars()})
            for i in range(0, len(wanted), 500):
                q = select(LabelRow).where(LabelRow.sha256.in_(wanted[i : i + 500]))
                found.update({r.id: r for r in s.execute(q).scalars()})
        return [found[k] for k in sorted(found)]

    # the case itself ----------------------------------------------------------------------------
    def case_id(self) -> str:
        """The case's GUID, made on first use and stable from then on (exports carry it)."""
        with self.session() as s:
            row = s.get(CaseInfoRow, "case_id")
            if row is not None:
                return row.value
        try:
            with self.session() as s, s.begin():
                s.add(CaseInfoRow(key="case_id", value=str(uuid.uuid4())))
        except IntegrityError:
            pass  # made at the same moment by another process: take theirs
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot give {self.case_dir} a case ID: {exc.orig or exc}") from exc
        with self.session() as s:
            row = s.get(CaseInfoRow, "case_id")
            assert row is not None
            return row.value

    def runs(self) -> list[RunRow]:
        """Every run of the case, oldest first."""
        with self.session() as s:
            return list(s.execute(select(RunRow).order_by(RunRow.id)).scalars())
