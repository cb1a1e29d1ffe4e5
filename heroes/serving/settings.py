"""Settings of the investigators' service (``HEROES_SERVE_*``; the secret also as
``HEROES_SECRET_KEY``).

The secret peppers the stored key hashes and signs browser sessions. It never lives in the
service database: a stolen database alone must not let anyone test guessed keys offline.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from heroes.config import MiB

#: the pepper used with ``--dev`` only; the server says loudly that it runs with it
DEV_SECRET = "heroes-development-secret-not-for-evidence"
SERVICE_DB = "service.db"


class SecretMissingError(RuntimeError):
    """No secret is configured and development mode was not asked for."""


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEROES_SERVE_", extra="ignore", populate_by_name=True
    )

    root: Path | None = Field(None, description="folder of cases: each subfolder is a case")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535)
    secret_key: str | None = Field(
        None,
        validation_alias=AliasChoices("HEROES_SECRET_KEY", "HEROES_SERVE_SECRET_KEY"),
        description="pepper for key hashes and session signing",
    )
    secret_key_file: Path | None = Field(None, description="a file holding the secret")
    db_url: str | None = Field(
        None,
        description="service database URL (users, keys, grants, audit, jobs); "
        "default: CASES_DIR/service.db (SQLite)",
    )
    dev: bool = Field(False, description="development mode: a fixed, public secret")
    max_upload_bytes: int = Field(20 * MiB, gt=0, description="largest query image accepted")
    max_upload_pixels: int = Field(50_000_000, gt=0, description="largest query image in pixels")
    thumb_size: int = Field(256, ge=32, le=256, description="longest side of a thumbnail")
    blur_radius: float = Field(12.0, ge=4.0, description="Gaussian blur radius at 256 px")
    max_page: int = Field(500, ge=1, description="most queue records per request")
    session_hours: float = Field(8.0, gt=0, description="lifetime of a browser session cookie")
    evidence_roots: list[Path] = Field(
        default_factory=list,
        description="folders under which jobs and thumbnails may read evidence (empty: any "
        "folder the server can read)",
    )
    preload_models: bool = Field(True, description="load the query models at start-up")
    active_gap_s: float = Field(
        300.0, gt=0, description="two requests closer than this count as continuous review time"
    )

    def secret(self) -> str:
        """The configured secret; ``DEV_SECRET`` in development mode; else an error."""
        if self.secret_key:
            return self.secret_key
        if self.secret_key_file is not None:
            text = Path(self.secret_key_file).read_text(encoding="utf-8").strip()
            if not text:
                raise SecretMissingError(f"the secret file {self.secret_key_file} is empty")
            return text
        if self.dev:
            return DEV_SECRET
        raise SecretMissingError(
            "no secret: set HEROES_SECRET_KEY or HEROES_SERVE_SECRET_KEY_FILE "
            "(or run with --dev on a machine without evidence)"
        )

    def service_db_url(self) -> str:
        if self.db_url:
            return self.db_url
        if self.root is None:
            raise ValueError("no cases folder (root) and no service database URL")
        return f"sqlite:///{(Path(self.root) / SERVICE_DB).resolve()}"
