"""One settings tree for the whole package.

Values come from keyword arguments, then ``HEROES_*`` environment variables (nested groups use a
double underscore, e.g. ``HEROES_LIMITS__MAX_DEPTH=3``). Every limit has a safe default so that a
hostile seizure (zip bombs, pixel bombs, symlink loops) cannot exhaust the machine.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
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
    max_nested_bytes: int = Field(
        16 * GiB,
        gt=0,
        description="expanded bytes of one file on disk, its archive and every archive nested in "
        "it together (the ratio limit applies to this total against the file's size too)",
    )
    max_nested_members: int = Field(
        250_000, gt=0, description="members of one file on disk and its nested archives together"
    )
    max_evidence_bytes: int = Field(
        1024 * GiB, gt=0, description="expanded bytes of all archives of one evidence root"
    )
    max_evidence_members: int = Field(
        10_000_000, gt=0, description="archive members of one evidence root"
    )
    max_pixels: int = Field(
        178_956_970, gt=0, description="pixels of one image (Pillow's bomb limit)"
    )
    max_decode_bytes: int = Field(
        512 * MiB, gt=0, description="memory one image decode may take in a worker"
    )
    max_frames: int = Field(2_000, gt=0, description="frames kept per video")
    max_video_seconds: float = Field(4 * 3600.0, gt=0, description="video time decoded per file")
    max_decoded_frames: int = Field(
        1_000_000, gt=0, description="frames decoded per video (kept or not)"
    )
    max_frame_rate: float = Field(
        1000.0,
        gt=0,
        description="frames decoded per second of the video's own timeline (past it, timestamps "
        "squeeze frames together to make decoding cost more than the video lasts)",
    )
    max_decode_seconds: float = Field(
        600.0, gt=0, description="wall-clock seconds spent decoding one video"
    )


class DiskImageSettings(BaseModel):
    """How forensic images (E01, raw/dd, VHD/VHDX, VMDK, QCOW2) are opened and walked."""

    #: passwords, BitLocker recovery passwords or LUKS passphrases tried on encrypted volumes;
    #: never written to the case (excluded from the run's recorded settings)
    keys: list[SecretStr] = Field(default_factory=list, exclude=True)
    shadow_copies: bool = Field(
        False, description="walk Volume Shadow Copies too (they are always listed)"
    )
    verify: bool = Field(
        True, description="read the whole image once to check it against the hashes it stores"
    )
    inline_bytes: int = Field(
        16 * MiB,
        gt=0,
        description="files of an image up to this size travel as bytes; larger ones as a "
        "reference that the worker reopens (never copied)",
    )
    max_files: int = Field(
        50_000_000, gt=0, description="files listed per image (the archive member cap is lower)"
    )
    carve: bool = Field(
        False,
        description="carve JPEG, PNG and MP4 files from the unallocated space of FAT, exFAT, "
        "NTFS and ext volumes (reads all of that space)",
    )


class PdqSettings(BaseModel):
    match_distance: int = Field(31, ge=0, le=256)
    min_quality: int = Field(50, ge=0, le=100)


DEFAULT_CATEGORY_WEIGHTS: dict[str, dict[str, float]] = {
    "VICS-US": {"1": 1.0, "2": 0.8, "4": 0.5, "3": 0.4, "0": 0.0},
    "VICS-Default": {"1": 1.0, "2": 0.8, "4": 0.5, "3": 0.4, "0": 0.0},
    "VICS-UK": {"A": 1.0, "B": 0.9, "C": 0.8, "0": 0.0},
}


class ScoringWeights(BaseModel):
    """The numbers of :mod:`heroes.pipeline.scoring`; the tiers they make must never overlap."""

    exact_base: float = 0.90
    exact_span: float = 0.10
    pdq_base: float = 0.80
    pdq_span: float = 0.09
    model_cap: float = 0.79
    # a face estimated under 18 and explicit nudity in the same frame: base + span * P(minor) * n
    minor_and_explicit_base: float = 0.60
    minor_and_explicit: float = 0.19
    # explicit nudity (at or above the threshold) without such a face in its frame
    explicit_base: float = 0.30
    explicit: float = 0.15  # per unit of the highest nudity score
    minor: float = 0.09  # per unit of the highest P(age < 18) of a face
    minor_threshold: float = Field(0.5, gt=0, le=1, description="'under 18' at or above this")
    explicit_threshold: float = Field(
        0.5, gt=0, le=1, description="for records whose nudity carries no threshold of its own"
    )
    error: float = 0.01
    why_floor: float = 0.005  # model contributions below this are not listed in ``why``
    uncategorised: float = 0.6
    unknown_category: float = 0.6
    categories: dict[str, dict[str, float]] = Field(
        default_factory=lambda: DEFAULT_CATEGORY_WEIGHTS
    )

    def category_weight(self, scheme: str | None, category: str | None) -> float:
        if category is None:
            return self.uncategorised
        return self.categories.get(scheme or "", {}).get(str(category), self.unknown_category)

    @model_validator(mode="after")
    def _tiers_do_not_overlap(self) -> ScoringWeights:
        weak = self.explicit + self.minor  # the most the tier below explicit nudity can reach
        checks = [
            (self.model_cap >= self.minor_and_explicit_base + self.minor_and_explicit, "model_cap"),
            (self.minor_and_explicit_base > self.explicit_base + weak, "minor_and_explicit_base"),
            (self.explicit_base > weak, "explicit_base"),
            (self.pdq_base > self.model_cap, "pdq_base"),
            (self.exact_base > self.pdq_base + self.pdq_span, "exact_base"),
        ]
        for ok, name in checks:
            if not ok:
                raise ValueError(f"scoring.{name} makes two priority tiers overlap")
        return self


class RaySettings(BaseModel):
    """How the Ray engine runs (``HEROES_RAY__...``); every field can also be set on the CLI."""

    address: str | None = Field(
        None, description="join a running cluster (auto, host:port, ray://...); none: embedded"
    )
    cpus: int | None = Field(None, ge=1, description="CPUs for an embedded Ray (default: all)")
    gpus: int | None = Field(None, ge=0, description="GPUs to use (default: what Ray detects)")
    actors: int | None = Field(
        None, ge=1, description="model actors (default: one per CPU, or one per GPU when split)"
    )
    batch_size: int | None = Field(None, ge=1, description="files per batch (8 on CPU, 32 on GPU)")
    layout: Literal["auto", "fused", "split"] = Field(
        "auto",
        description="fused: one CPU actor hashes, decodes and infers; split: CPU tasks decode and "
        "GPU actors infer; auto: split when GPUs are used",
    )
    temp_dir: Path | None = Field(
        None, description="Ray's session folder (default: CASE/.ray, or a short one under TMPDIR)"
    )
    object_store_mb: int = Field(1024, ge=100, description="object store of an embedded Ray")
    min_files: int = Field(
        300, ge=0, description="engine=auto uses Ray from this many files on (Ray starts in ~4 s)"
    )


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
    scene_model: str = Field("scene-vlad-fast", description="scene embedding model (manifest name)")
    face_model: str = Field("dlib-face-resnet", description="face identity model (manifest name)")
    detector_model: str = Field(
        "nudenet-320n", description="nudity and face detector (manifest name)"
    )
    landmarks_model: str = Field("dlib-landmarks-5", description="face landmarks (manifest name)")
    age_model: str = Field("age-v1", description="age estimation model (manifest name)")
    int8: bool = Field(
        True,
        description="on CPU, run the INT8 variant of a model where one is shipped and measured to "
        "agree with the FP32 model",
    )
    fp16: bool = Field(
        True, description="on a GPU, run the models in half precision (TensorRT FP16)"
    )
    ort_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime threads per session (default: cores / workers)"
    )
    model_dir: Path | None = Field(
        None, description="where fetched and converted models live (default: the user cache)"
    )
    trt_cache: Path | None = Field(None, description="TensorRT engine cache folder (none: off)")
    decode_hook: str | None = Field(
        None, description="module:function called in the worker before each file is decoded"
    )
    nudity_threshold: float = Field(0.5, ge=0, le=1, description="explicit at or above this score")
    engine: Literal["auto", "ray", "local"] = Field(
        "ray",
        description="ray: Ray actors (embedded unless ray.address); local: a process pool; "
        "auto: Ray for a cluster address or a seizure of ray.min_files files or more",
    )
    ray: RaySettings = Field(default_factory=RaySettings)
    limits: Limits = Field(default_factory=Limits)
    disk: DiskImageSettings = Field(default_factory=DiskImageSettings)
    pdq: PdqSettings = Field(default_factory=PdqSettings)
    scoring: ScoringWeights = Field(default_factory=ScoringWeights)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
