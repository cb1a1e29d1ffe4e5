"""Request bodies of the API (responses are the records and plain objects the docs describe)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PrefsUpdate(_Strict):
    blur: bool | None = None
    greyscale: bool | None = None


class LabelCreate(_Strict):
    category: int | None = Field(None, ge=0, le=4, description="VICS-US 0-4, or null")
    victim_identified: bool = False
    offender_identified: bool = False
    series: str | None = Field(None, max_length=200)
    note: str | None = Field(None, max_length=4000)


class JobCreate(_Strict):
    evidence: str = Field(..., min_length=1, max_length=4096, description="a path on the server")
    case: str = Field(..., min_length=1, max_length=128)


class UserCreate(_Strict):
    name: str = Field(..., min_length=1, max_length=128)
    role: str = Field(..., pattern="^(admin|lab|investigator)$")
    daily_reveal_cap: int | None = Field(None, ge=0)


class KeyCreate(_Strict):
    user: str = Field(..., min_length=1, max_length=128)
    cases: list[str] = Field(default_factory=list, max_length=1000)


class UserUpdate(_Strict):
    daily_reveal_cap: int | None = Field(..., ge=0, description="pictures a day; null: no cap")
