"""One settings tree for the whole package.

Values come from keyword arguments, then ``HEROES_*`` environment variables (nested groups use a
double underscore, e.g. ``HEROES_LIMITS__MAX_DEPTH=3``). Every limit has a safe default so that a
hostile seizure (zip bombs, pixel bombs, symlink loops) cannot exhaust the machine.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
GiB = 1024 * MiB


class Limits(BaseModel):
    """Bounds on what one file or archive may cost; past a bound the item gets an error record."""

    max_depth: int = Field(4, ge=0, description="archive nesting depth (0: do not open archives)")
    max_member_bytes: int = Field(512 * MiB, gt=0, description="bytes of one archive member")
    max_archive_bytes: int = Field(8 * GiB, gt=0, description="total expanded bytes per archive")
    max_ratio: float = Field(100.0, gt=0, description="expanded / packed size of an archive")
    max_members: int = Field(100_000, gt=0, description="members per archive")
    max_pixels: int = Field(
        178_956_970, gt=0, description="pixels of one image (Pillow's bomb limit)"
    )
    max_frames: int = Field(2_000, gt=0, description="frames kept per video")
    max_video_seconds: float = Field(4 * 3600.0, gt=0, description="video time decoded per file")


class PdqSettings(BaseModel):
    match_distance: int = Field(31, ge=0, le=256)
    min_quality: int = Field(50, ge=0, le=100)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEROES_", env_nested_delimiter="__", extra="ignore"
    )

    db_url: str | None = Field(None, description="SQLAlchemy URL; default is CASE/case.db (SQLite)")
    working_size: int = Field(512, ge=32, description="longest side of the decoded working copy")
    keyframe_interval: float = Field(1.0, gt=0, description="at least one kept frame per N seconds")
    workers: int = Field(0, ge=0, description="decode processes; 0 means one per core")
    hash_chunk: int = Field(1 * MiB, ge=4096, description="read size when hashing")
    models: bool = Field(True, description="run the models (detector, faces, scene) on images")
    device: str | None = Field(None, description="cpu | cuda | tensorrt (default: best installed)")
    scene_model: str = Field("scene-vlad", description="scene embedding model (manifest name)")
    face_model: str = Field("dlib-face-resnet", description="face identity model (manifest name)")
    nudity_threshold: float = Field(0.5, ge=0, le=1, description="explicit at or above this score")
    limits: Limits = Field(default_factory=Limits)
    pdq: PdqSettings = Field(default_factory=PdqSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
