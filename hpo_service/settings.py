"""Service settings, validated once; no side effects at import time."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".hpo")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HPO_", extra="ignore")

    database_url: str = f"sqlite:///{DEFAULT_HOME / 'hpo.db'}"
    checkpoint_uri: str = f"file://{(DEFAULT_HOME / 'checkpoints').resolve()}"
    search_space_dir: Path = Path(__file__).resolve().parent.parent / "search_spaces"
    # Seconds between sweeps that requeue trials whose lease expired.
    expiry_sweep_seconds: float = 1.0
    # Long-poll: how often a waiting lease request re-checks for work.
    lease_poll_seconds: float = 0.2
    max_lease_wait_seconds: float = 60.0
    # At start-up, the dashboard's incremental views (history, per-rung totals) of this many
    # running studies, the most recently updated first, are built in the background (0: none).
    dashboard_warm_studies: int = 5
    # Where an embedded server writes the admin token it creates on first start.
    token_file: Path = DEFAULT_HOME / "admin-token"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
