"""S3 locations (``s3://bucket/prefix``) and the client that reaches them.

The endpoint and credentials are boto3's own, so whatever already works for the AWS CLI works
here: the ``AWS_*`` environment variables, ``~/.aws``, an instance role. An S3-compatible server
(MinIO, Ceph, ``moto_server``) is named by ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``).
boto3 is the ``[s3]`` extra: a local run never imports it.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urbanfusion.pipeline.errors import ConfigError, RemoteStorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_SCHEME = "s3://"
# S3's rules for bucket names (lower case, digits, dots and hyphens, 3 to 63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def is_s3(url: str) -> bool:
    """Whether ``url`` names object storage (``s3://...``) rather than a local path."""
    return url.lower().startswith(S3_SCHEME)


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no slash at either end; empty for the bucket's root)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str, key: str = "output.dir") -> S3Location:
        """``s3://bucket/some/prefix`` as a location.

        Raises:
            ConfigError: no bucket, or a name S3 does not allow.
        """
        rest = url[len(S3_SCHEME) :]
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.match(bucket):
            raise ConfigError(
                f"{key} {url!r}: {bucket!r} is not an S3 bucket name (3 to 63 lower-case "
                "letters, digits, dots or hyphens); write it as s3://bucket/prefix"
            )
        return cls(bucket, prefix.strip("/"))

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``."""
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        """The key of ``parts`` under the prefix: ``prefix/runs/<id>/class_map.tif``."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def local_name(self) -> Path:
        """A relative path naming this location, for its working copy on a disk."""
        return Path(self.bucket, *(p for p in self.prefix.split("/") if p))


def s3_client(url: str) -> S3Client:
    """A boto3 S3 client, made the way the AWS CLI would make it.

    Raises:
        ConfigError: boto3 is not installed (with the command that installs it).
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError(
            f"{url} is on S3, which needs boto3; install it with `pip install -e .[s3]`"
        ) from None
    gdal_s3_endpoint()  # GDAL then reads and writes the same bucket (/vsis3/)
    # Retries in boto3's standard mode: an S3 server answers "slow down" under load.
    return boto3.client("s3", config=Config(retries={"max_attempts": 6, "mode": "standard"}))


def error_code(err: BaseException) -> str:
    """S3's code for a failed request (``PreconditionFailed``, ``NoSuchKey``...), else ''."""
    response: Any = getattr(err, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def s3_errors(url: str, doing: str) -> Iterator[None]:
    """Turn what boto3 raises into one :class:`RemoteStorageError` line saying what to check."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as e:
        code = error_code(e)
        hint = {
            "NoSuchBucket": "create the bucket or fix its name in output.dir",
            "AccessDenied": "give these credentials access to the bucket",
            "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID / the AWS profile",
            "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY / the AWS profile",
        }.get(code, "check the bucket, the credentials and AWS_ENDPOINT_URL_S3")
        raise RemoteStorageError(f"{doing} {url} failed ({code or e}); {hint}") from None
    except BotoCoreError as e:
        first = str(e).splitlines()[0]
        raise RemoteStorageError(
            f"{doing} {url} failed ({first}); check the network, the credentials and "
            "AWS_ENDPOINT_URL_S3"
        ) from None


def gdal_s3_endpoint() -> None:
    """Point GDAL at boto3's S3 endpoint (``AWS_ENDPOINT_URL_S3``) unless it has its own.

    boto3 and the AWS CLI read ``AWS_ENDPOINT_URL_S3``; GDAL reads ``AWS_S3_ENDPOINT`` (host
    and port), ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING``. One variable then serves both.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint or "AWS_S3_ENDPOINT" in os.environ:
        return
    parts = urllib.parse.urlsplit(endpoint)
    os.environ["AWS_S3_ENDPOINT"] = parts.netloc
    os.environ.setdefault("AWS_HTTPS", "NO" if parts.scheme == "http" else "YES")
    # Servers other than AWS (MinIO, moto) take the bucket in the path, not the host name.
    os.environ.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")
