"""The case store: every item of a case, the hash sets it was matched against, and its runs."""

from heroes.store.db import CaseStore, StoreError
from heroes.store.schema import (
    Base,
    CaseInfoRow,
    HashEntryRow,
    HashSetRow,
    ItemRow,
    LabelRow,
    RunRow,
    VectorRow,
)

__all__ = [
    "Base",
    "CaseInfoRow",
    "CaseStore",
    "HashEntryRow",
    "HashSetRow",
    "ItemRow",
    "LabelRow",
    "RunRow",
    "StoreError",
    "VectorRow",
]
