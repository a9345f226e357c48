"""An S3 bucket prefix, through boto3 (any S3-compatible endpoint via ``s3_endpoint_url``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from rag_ops.errors import DocumentGone, DocumentTooLarge, SourceError
from rag_ops.sources import SourceDocument, path_selected

if TYPE_CHECKING:
    from rag_ops.config import Settings


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SourceError(f"S3 source must look like s3://bucket/prefix. Got {url!r}.")
    return bucket, prefix


def s3_client(settings: "Settings"):
    """A boto3 S3 client of the settings: endpoint, region and, when set, explicit keys
    (else boto3's standard chain: environment, profile, instance role)."""
    import boto3
    from botocore.config import Config

    keys = {}
    if settings.s3_access_key_id:
        keys = {
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": settings.s3_secret_access_key.reveal() or None,
        }
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region or None,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        **keys,
    )


class S3Source:
    def __init__(self, url: str, settings: "Settings"):
        self.bucket, self.prefix = parse_s3_url(url)
        self.root = url
        self.include = settings.include
        self.exclude = settings.exclude
        self.client = s3_client(settings)

    def list_documents(self) -> Iterator[SourceDocument]:
        """Every selected object under the prefix, following pagination.

        Raises:
            SourceError: the bucket cannot be listed (names the bucket, never credentials).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        base = self.prefix.rstrip("/") + "/" if self.prefix and not self.prefix.endswith("/") else self.prefix
        try:
            # the prefix is a folder: s3://b/reports lists reports/…, not reports-archive/…
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue  # folder marker
                    rel = key[len(base) :] if key.startswith(base) else key
                    if not path_selected(rel, self.include, self.exclude):
                        continue
                    yield SourceDocument(
                        uri=f"s3://{self.bucket}/{key}",
                        size=int(obj["Size"]),
                        modified=obj["LastModified"].timestamp(),
                        etag=str(obj.get("ETag", "")).strip('"'),
                    )
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"cannot list s3://{self.bucket}/{self.prefix}: {exc}") from exc

    def read(self, doc: SourceDocument, max_bytes: int) -> bytes:
        """The object's bytes; objects over ``max_bytes`` are refused before download."""
        from botocore.exceptions import BotoCoreError, ClientError

        if doc.size > max_bytes:
            raise DocumentTooLarge(f"object is {doc.size:,} bytes, over the max_document_bytes cap of {max_bytes:,}")
        key = doc.uri[len(f"s3://{self.bucket}/") :]
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            body = resp["Body"].read(max_bytes + 1)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise DocumentGone("object was deleted after it was listed") from None
            raise SourceError(f"cannot read {doc.uri}: {exc}") from exc
        except BotoCoreError as exc:
            raise SourceError(f"cannot read {doc.uri}: {exc}") from exc
        if len(body) > max_bytes:
            raise DocumentTooLarge(f"object grew past the max_document_bytes cap of {max_bytes:,}")
        return body
