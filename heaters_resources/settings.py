"""Process-wide settings read from the environment.

A plain frozen dataclass (no pydantic) so every layer — CLI, Dagster resources, tests — builds the
same object from the same variables, and tests can build one explicitly without touching os.environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heaters_media.download import DownloadLimits

DEFAULT_HOME = "./.heaters"
#: HEATERS_CLIPS: cut every clip at splice, or make review proxies and cut on approval.
CLIP_MODES = ("exact", "proxy")


def _clean(value: str | None) -> str | None:
    """Treat unset and empty variables alike (an empty `HEATERS_S3_BUCKET=` means no S3)."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A non-negative number of seconds; a malformed value is an error, not a silent default."""
    raw = _clean(env.get(name))
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r} must be a finite number of seconds >= 0")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off (anything else is an error)."""
    text = (_clean(env.get(name)) or "").lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1/true/yes/on or 0/false/no/off, not {text!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices`` (an unknown value is an error, not a silent default)."""
    text = (_clean(env.get(name)) or default).lower()
    if text not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {text!r}")
    return text


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of seconds > 0 (a limit of zero would refuse everything)."""
    value = _seconds(env, name, default)
    if value <= 0:
        raise ValueError(f"{name} must be > 0")
    return value


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive whole number of bytes; a malformed value is an error, not a silent default."""
    raw = _clean(env.get(name))
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ValueError(f"{name}={raw!r} must be a whole number of bytes >= 1")
    return int(raw)


@dataclass(frozen=True)
class Settings:
    """Every ``HEATERS_*`` setting of the platform (ARCHITECTURE.md, "Configuration"): where state
    lives (HEATERS_HOME, the database URL, the S3 object store), the default embedding space,
    the inbox and archive timings, and the review page's secrets. Nothing else reads them."""

    home: Path
    database_url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    #: Default embedding space (None: the weights-free descriptor / ``keyframe_multi_avg``).
    embedding_model: str | None = None
    embedding_strategy: str | None = None
    #: Inbox sensors: a dropped file must be unmodified (mtime) this long before it is registered.
    inbox_settle_seconds: float = 2.0
    #: S3 prefix watched as an inbox ("" : no S3 inbox).
    inbox_prefix: str = ""
    #: An archive waits this long before its objects are deleted, so an undo can still win.
    archive_grace_seconds: float = 60.0
    #: Review page: a shared token required from non-loopback clients, and the key that signs
    #: its cookies (None: a random one per process, so sessions end with the process).
    review_token: str | None = None
    review_secret: str | None = None
    #: Where the review page is reached (links from Dagster's asset pages to clips).
    review_url: str = "http://127.0.0.1:8765"
    #: Review shows similar clips by default: the weights-free descriptor embeds each clip as
    #: soon as it is ready for review (cheap; no state change). Off: only embedded clips have
    #: neighbours.
    review_similar: bool = True
    #: Owners of every Dagster asset: e-mail addresses or ``team:<name>`` (comma-separated).
    asset_owners: tuple[str, ...] = ("team:curation",)
    #: URL downloads (yt-dlp): the most bytes one may write, its overall deadline, and how long
    #: it may stall (silent, or under 64 KiB in that time) before it fails as download_failed.
    max_download_bytes: int = 20 * 1024**3
    download_timeout_seconds: float = 7200.0
    download_stall_seconds: float = 60.0
    #: Leases (states.leases): how long a worker on another host counts as alive without a
    #: heartbeat (on its own host, its process table answers at once).
    lease_seconds: float = 120.0
    #: Crash tests only (heaters_resources.faults): the named point where a worker kills itself.
    fault_point: str | None = None
    #: A Ray cluster's job-submission address (``http://head:8265``): runs are launched there as
    #: Ray jobs (heaters_resources/orchestration/ray_mode.py). Unset: runs on this machine.
    ray_address: str | None = None
    #: CPUs a run asks Ray for (media runs; ffmpeg uses more threads, this is what Ray counts).
    ray_cpus_per_run: float = 1.0
    #: Where embeddings run by default (``auto``, ``cpu``, ``cuda``, ``mps``); ``cuda`` also
    #: makes embedding runs ask Ray for a GPU.
    embed_device: str = "auto"
    #: Kind of the HNSW index made for a new model: ``halfvec`` (half the size) or ``vector``.
    vector_index: str = "halfvec"
    #: When clips are cut: ``proxy`` (default) makes clip rows only, a review proxy of each clip
    #: in the artifacts' decode, and cuts a clip's file when it is approved (its embedding
    #: run): about half the media time, and no file cut for a clip a reviewer throws away;
    #: ``exact`` cuts every clip's full-quality file at splice.
    clips: str = "proxy"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(_clean(env.get("HEATERS_HOME")) or DEFAULT_HOME).expanduser().resolve()
        return cls(
            home=home,
            database_url=_clean(env.get("HEATERS_DATABASE_URL")),
            s3_bucket=_clean(env.get("HEATERS_S3_BUCKET")),
            s3_prefix=_clean(env.get("HEATERS_S3_PREFIX")) or "",
            s3_endpoint_url=_clean(env.get("HEATERS_S3_ENDPOINT_URL")),
            s3_region=_clean(env.get("HEATERS_S3_REGION")),
            embedding_model=_clean(env.get("HEATERS_EMBEDDING_MODEL")),
            embedding_strategy=_clean(env.get("HEATERS_EMBEDDING_STRATEGY")),
            inbox_settle_seconds=_seconds(env, "HEATERS_INBOX_SETTLE_SECONDS", 2.0),
            inbox_prefix=_clean(env.get("HEATERS_INBOX_PREFIX")) or "",
            archive_grace_seconds=_seconds(env, "HEATERS_ARCHIVE_GRACE_SECONDS", 60.0),
            review_token=_clean(env.get("HEATERS_REVIEW_TOKEN")),
            review_secret=_clean(env.get("HEATERS_REVIEW_SECRET")),
            review_url=_clean(env.get("HEATERS_REVIEW_URL")) or "http://127.0.0.1:8765",
            review_similar=_flag(env, "HEATERS_REVIEW_SIMILAR", True),
            asset_owners=tuple(
                o.strip()
                for o in (_clean(env.get("HEATERS_ASSET_OWNERS")) or "team:curation").split(",")
                if o.strip()
            ),
            max_download_bytes=_bytes(env, "HEATERS_MAX_DOWNLOAD_BYTES", 20 * 1024**3),
            download_timeout_seconds=_positive(env, "HEATERS_DOWNLOAD_TIMEOUT_SECONDS", 7200.0),
            download_stall_seconds=_positive(env, "HEATERS_DOWNLOAD_STALL_SECONDS", 60.0),
            lease_seconds=_positive(env, "HEATERS_LEASE_SECONDS", 120.0),
            fault_point=_clean(env.get("HEATERS_FAULT_POINT")),
            ray_address=_clean(env.get("HEATERS_RAY_ADDRESS")),
            ray_cpus_per_run=_positive(env, "HEATERS_RAY_CPUS_PER_RUN", 1.0),
            embed_device=_clean(env.get("HEATERS_EMBED_DEVICE")) or "auto",
            vector_index=_choice(env, "HEATERS_VECTOR_INDEX", ("halfvec", "vector"), "halfvec"),
            clips=_choice(env, "HEATERS_CLIPS", CLIP_MODES, "proxy"),
        )

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def download_limits(self) -> DownloadLimits:
        """The URL-download limits, in the form ``heaters_media.ingest.ingest`` takes them."""
        from heaters_media.download import DownloadLimits

        return DownloadLimits(
            max_bytes=self.max_download_bytes,
            timeout_seconds=self.download_timeout_seconds,
            stall_seconds=self.download_stall_seconds,
        )

    @property
    def pgdata_dir(self) -> Path:
        """Data folder of the embedded PostgreSQL (used only without HEATERS_DATABASE_URL)."""
        return self.home / "pgdata"

    @property
    def objects_dir(self) -> Path:
        """Root of the local object store (used only without HEATERS_S3_BUCKET)."""
        return self.home / "objects"

    @property
    def uses_s3(self) -> bool:
        return self.s3_bucket is not None

    @property
    def uses_ray(self) -> bool:
        return self.ray_address is not None
