"""Server settings: one object built from the command line (and environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    model_repository: Path
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "auto"  # json | console | auto (json unless stderr is a TTY)
    log_level: str = "info"
    # A change is acted on once the repository has been quiet this long, so that a model being
    # copied in is not loaded half-written.
    settle_seconds: float = 1.0
    # Full rescan period: covers filesystems that deliver no events (NFS, some bind mounts).
    rescan_seconds: float = 10.0
    # Worker threads for blocking OpenVINO work (compile, release).
    load_workers: int = 2
