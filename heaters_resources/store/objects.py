"""The object store: one interface (`ObjectStore`), two backends (local folder, S3 via boto3).

Callers only ever pass keys from `heaters_resources.store.keys`. Both backends behave the same way:
deleting a missing key succeeds (idempotent), `delete_many` reports failures per key instead of
raising, `upload_file` reports progress as byte increments (boto3's callback convention).
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from heaters_resources.settings import Settings

ProgressCallback = Callable[[int], None]
DELETE_BATCH = 1000  # S3 DeleteObjects accepts at most 1000 keys per request
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
DEFAULT_MULTIPART_CHUNKSIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


@dataclass
class DeleteResult:
    """Outcome of a batched delete: keys deleted, and an error message per failed key."""

    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    requests: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


@runtime_checkable
class ObjectStore(Protocol):
    def upload_file(
        self,
        path: Path | str,
        key: str,
        *,
        content_type: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> None: ...
    def upload_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> None: ...
    def download_file(
        self, key: str, path: Path | str, *, progress: ProgressCallback | None = None
    ) -> Path: ...
    def read_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def url(self, key: str, *, expires_in: int = 3600) -> str: ...
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def delete_many(self, keys: Iterable[str]) -> DeleteResult: ...


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
        raise ValueError(f"invalid object key: {key!r}")
    return key


def _copy_with_progress(src: Any, dst: Any, progress: ProgressCallback | None) -> None:
    while chunk := src.read(1024 * 1024):
        dst.write(chunk)
        if progress is not None:
            progress(len(chunk))


class LocalObjectStore:
    """Objects as files under `root` (default HEATERS_HOME/objects); writes are atomic renames."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _write(self, key: str, writer: Callable[[Any], None]) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                writer(out)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def upload_file(
        self,
        path: Path | str,
        key: str,
        *,
        content_type: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        with open(path, "rb") as src:
            self._write(key, lambda out: _copy_with_progress(src, out, progress))

    def upload_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> None:
        self._write(key, lambda out: out.write(data))

    def download_file(
        self, key: str, path: Path | str, *, progress: ProgressCallback | None = None
    ) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path(key), "rb") as src, open(target, "wb") as dst:
            _copy_with_progress(src, dst, progress)
        return target

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def url(self, key: str, *, expires_in: int = 3600) -> str:
        return self.path(key).as_uri()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".upload-"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, tz=UTC))

    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        result = DeleteResult()
        for key in dict.fromkeys(keys):
            try:
                self.path(key).unlink(missing_ok=True)
                result.deleted.append(key)
            except (OSError, ValueError) as exc:
                result.failed[key] = f"{type(exc).__name__}: {exc}"
        result.requests = 1
        for key in result.deleted:
            self._prune_parents(self.path(key))
        return result

    def _prune_parents(self, path: Path) -> None:
        """Remove now-empty folders left by deleted keys (never the root itself)."""
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                return
            parent = parent.parent


class S3ObjectStore:
    """S3 (or MinIO and other S3-compatible stores via `endpoint_url`) through boto3.

    Throttling and 5xx answers are retried by botocore's `standard` retry mode (exponential
    backoff with jitter), `max_attempts` tries in all, the first included; uploads above
    `multipart_threshold` go multipart through boto3's transfer manager.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = 8,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        client: Any = None,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": max_attempts},
                signature_version="s3v4",
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize
        )

    def _full(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def upload_file(
        self,
        path: Path | str,
        key: str,
        *,
        content_type: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        # Without a type, S3 serves `binary/octet-stream`: browsers sniff a clip and play it,
        # stricter players refuse it. The key's extension says what it is (clips are .mp4).
        content_type = content_type or mimetypes.guess_type(key)[0]
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(
            str(path),
            self.bucket,
            self._full(key),
            ExtraArgs=extra,
            Callback=progress,
            Config=self.transfer,
        )

    def upload_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> None:
        content_type = content_type or mimetypes.guess_type(key)[0]
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, **extra)

    def download_file(
        self, key: str, path: Path | str, *, progress: ProgressCallback | None = None
    ) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(
            self.bucket, self._full(key), str(target), Callback=progress, Config=self.transfer
        )
        return target

    def read_bytes(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        return bytes(body.read())

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def url(self, key: str, *, expires_in: int = 3600) -> str:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._full(key)},
                ExpiresIn=expires_in,
            )
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    obj["Key"][len(self.prefix) :], int(obj["Size"]), obj["LastModified"]
                )

    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        """DeleteObjects in batches of 1000; per-key errors (and failed batches) are reported."""
        from botocore.exceptions import BotoCoreError, ClientError

        result = DeleteResult()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), DELETE_BATCH):
            batch = unique[start : start + DELETE_BATCH]
            result.requests += 1
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._full(k)} for k in batch], "Quiet": True},
                )
            except (ClientError, BotoCoreError) as exc:
                for key in batch:
                    result.failed[key] = f"{type(exc).__name__}: {exc}"
                continue
            errors = {
                e["Key"][len(self.prefix) :]: f"{e.get('Code')}: {e.get('Message')}"
                for e in response.get("Errors", [])
            }
            result.failed.update(errors)
            result.deleted.extend(k for k in batch if k not in errors)
        return result


def object_store_from_settings(settings: Settings | None = None, **s3_options: Any) -> ObjectStore:
    """S3 when HEATERS_S3_BUCKET is set, otherwise the local folder under HEATERS_HOME."""
    settings = settings or Settings.from_env()
    if settings.s3_bucket:
        return S3ObjectStore(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            **s3_options,
        )
    return LocalObjectStore(settings.objects_dir)
