"""The case store: every item of a case, the hash sets it was matched against, and its runs."""

from heroes.store.db import CaseStore, SchemaMismatch, StoreError
from heroes.store.schema import Base, HashEntryRow, HashSetRow, ItemRow, RunRow, VectorRow

__all__ = [
    "Base",
    "CaseStore",
    "HashEntryRow",
    "HashSetRow",
    "ItemRow",
    "RunRow",
    "SchemaMismatch",
    "StoreError",
    "VectorRow",
]
