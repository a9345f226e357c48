"""Staging in S3 (``s3://bucket/prefix``; MinIO or any S3-compatible endpoint via ``s3_endpoint_url``).

Every worker of a distributed executor reaches it, so a batch staged on one worker is read on
another. boto3 does the work: retries (standard mode), multipart for large objects; a PUT is
atomic, so a reader sees a whole object or none.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rag_ops.errors import StagingError, StagingMissing
from rag_ops.staging import Staging

if TYPE_CHECKING:
    from rag_ops.config import Settings


class S3Staging(Staging):
    def __init__(self, root: str, settings: "Settings"):
        from rag_ops.sources.s3 import parse_s3_url, s3_client

        self.root = root.rstrip("/")
        self.bucket, _ = parse_s3_url(self.root + "/")
        self.client = s3_client(settings)

    def join(self, base: str, name: str) -> str:
        return base.rstrip("/") + "/" + name

    def _key(self, url: str) -> str:
        head = f"s3://{self.bucket}/"
        if not url.startswith(head):
            raise StagingError(f"staged file {url} is not in the staging bucket {self.bucket}")
        return url[len(head):]

    def write_bytes(self, url: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(url), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise StagingError(f"cannot write staged object {url}: {_reason(exc)}") from exc

    def read_bytes(self, url: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(url))["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise StagingMissing(f"staged object {url} does not exist") from None
            raise StagingError(f"cannot read staged object {url}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StagingError(f"cannot read staged object {url}: {_reason(exc)}") from exc

    def exists(self, url: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(url))
            return True
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise StagingError(f"cannot check staged object {url}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StagingError(f"cannot check staged object {url}: {_reason(exc)}") from exc

    def _list(self, prefix: str):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (BotoCoreError, ClientError) as exc:
            raise StagingError(f"cannot list s3://{self.bucket}/{prefix}: {_reason(exc)}") from exc

    def _delete(self, keys: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
                )
        except (BotoCoreError, ClientError) as exc:
            raise StagingError(f"cannot remove staged objects in s3://{self.bucket}: {_reason(exc)}") from exc

    def remove_run(self, run_url: str) -> None:
        prefix = self._key(run_url.rstrip("/") + "/")
        self._delete([o["Key"] for o in self._list(prefix)])

    def clean_stale(self, older_than_seconds: float, keep: str) -> int:
        root = self._key(self.root + "/")
        keep_prefix = self._key(keep.rstrip("/") + "/")
        newest: dict[str, float] = {}
        keys: dict[str, list[str]] = {}
        for obj in self._list(root):
            run = obj["Key"][len(root):].split("/", 1)[0]
            run_prefix = root + run + "/"
            if run_prefix == keep_prefix or "/" not in obj["Key"][len(root):]:
                continue
            newest[run_prefix] = max(newest.get(run_prefix, 0.0), obj["LastModified"].timestamp())
            keys.setdefault(run_prefix, []).append(obj["Key"])
        cutoff = time.time() - older_than_seconds
        stale = [p for p, t in newest.items() if t < cutoff]
        self._delete([k for p in stale for k in keys[p]])
        return len(stale)


def _code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _reason(exc) -> str:
    """botocore's message without request details (it names no credentials, but keep it short)."""
    code = _code(exc)
    return f"{code}: {exc}" if code and code not in str(exc) else str(exc)
