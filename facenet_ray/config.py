"""All settings of facenet_ray in one pydantic object, read from `FACENET_*` env variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

NAMESPACE = "facenet"  # Ray namespace of every named actor of the service


class Settings(BaseSettings):
    """Every knob of the service. `FACENET_TOLERANCE=0.5` sets `tolerance`, and so on."""

    model_config = SettingsConfigDict(env_prefix="FACENET_", extra="ignore")

    # Where things live.
    data_dir: Path = Path("./facenet-data")
    gallery_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    # Face model (faces.py). `encoder="fake"` gives deterministic random vectors: scale tests only.
    encoder: Literal["dlib", "fake"] = "dlib"
    detector: Literal["hog", "cnn"] = "hog"
    upsample: int = Field(1, ge=0, le=3)
    jitters: int = Field(1, ge=1, le=100)
    landmarks: Literal["small", "large"] = "small"
    detect_max_side: int = Field(800, ge=100)  # detect on a copy no larger than this
    fallback_detection: bool = True  # upsample / CNN / whole-image before answering no_face

    # Search decision (index.py; the rules are in decision.py, measured by bench/accuracy.py).
    tolerance: float = Field(0.6, gt=0, le=2)  # no match is ever farther than this
    top_k: int = Field(5, ge=1, le=100)  # the "cohort" rule wants top_k >= cohort_size + 1
    # "nearest": plain tolerance; "margin": ratio test; "cohort": tolerance from the cohort.
    decision_rule: Literal["nearest", "margin", "cohort"] = "cohort"
    margin_ratio: float = Field(0.9, gt=0, le=1)  # best / second-best person distance
    # cohort rule: match if best <= cohort_offset + cohort_weight * mean(next cohort_size
    # persons' distances) and best <= second - min_gap; calibrated on lfw-dev (FA ~3%).
    cohort_size: int = Field(4, ge=1, le=99)
    cohort_offset: float = Field(0.185, ge=0, le=2)
    cohort_weight: float = Field(0.5, ge=0, le=2)
    cohort_prior: float = Field(0.8, gt=0, le=2)  # stands in for cohort persons the gallery lacks
    min_gap: float = Field(0.01, ge=0, le=1)  # nearer than this to the second person: ambiguous
    confidence_scale: float = Field(0.02, gt=0, le=1)  # distance for confidence 0.5 -> 0.73
    all_faces: bool = False  # search every face of a probe, not only the largest

    # Input limits.
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000

    # Runtime (shard, distributor, coordinator).
    heartbeat_interval_s: float = Field(2.0, gt=0)
    heartbeat_misses: int = Field(3, ge=1)
    auto_heal: bool = True
    search_timeout_s: float = Field(10.0, gt=0)
    copy_concurrency: int = Field(8, ge=1)
    shard_cpus: float = Field(0.1, ge=0)  # CPU reserved by each shard actor itself

    @property
    def model_key(self) -> str:
        """Names the encodings a setting produces; cached ones of another key are stale."""
        if self.encoder == "fake":
            return "fake-v1"
        return f"dlib-{self.landmarks}-j{self.jitters}"

    def shard_root(self, server_id: str) -> Path:
        """A server's own folder under the data dir (the same path on every machine's disk)."""
        return self.data_dir / "shards" / server_id

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.duckdb"
