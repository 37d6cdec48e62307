"""The S3 primitives of a remote (``s3://bucket/prefix``), through s3fs.

s3fs configures the connection (credentials from botocore's usual chain or the
options, ``endpoint_url``, ``client_kwargs``) and owns the event loop; the requests
themselves go straight to its aiobotocore client, so that conditions travel as S3
defines them and errors reach ``classify`` unchanged:

* create-if-absent: ``PutObject`` with ``IfNoneMatch="*"`` (header ``If-None-Match:
  *``); compare-and-swap: ``PutObject`` with ``IfMatch=<ETag>``; conditional delete:
  ``DeleteObject`` with ``IfMatch``. A refused condition is HTTP 412
  ``PreconditionFailed``; 409 ``ConditionalRequestConflict`` (a concurrent
  conditional write won) counts as refused too, as does 404 for ``IfMatch`` on an
  absent key.
* retries are ``Backend``'s alone: botocore is configured for one attempt
  (``total_max_attempts=1``) and s3fs's own retry loop is not used.

The tag is the object's ETag, quotes included, as S3 returns it.
Thread-safe: calls from any thread run on s3fs's event loop.
"""

from __future__ import annotations

import asyncio

import fsspec.asyn
import s3fs
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as
                                 BotoConnectionError, HTTPClientError, IncompleteReadError,
                                 NoCredentialsError, PartialCredentialsError)

from .stores import Failure, classify_oserror, coerce_options

try:  # aiohttp is how aiobotocore talks; its errors surface on broken connections
    from aiohttp import ClientError as _AiohttpError
except ImportError:  # pragma: no cover - aiobotocore depends on aiohttp
    _AiohttpError = ()

_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
               "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AccountProblem",
               "AllAccessDisabled", "InvalidClientTokenId", "UnrecognizedClientException"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestTimeoutException", "ServiceUnavailable", "InternalError",
                    "RequestThrottled", "RequestLimitExceeded", "BandwidthLimitExceeded"}
_INVALID_CODES = {"NoSuchBucket", "InvalidBucketName", "PermanentRedirect",
                  "AuthorizationHeaderMalformed"}
_REFUSED = {412, 409}


def status_of(exc: ClientError) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a botocore ``ClientError``."""
    response = exc.response or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return int(status), str(response.get("Error", {}).get("Code", ""))


def options_for_s3fs(options: dict | None) -> dict:
    """s3fs keyword arguments from remote options (``--option k=v``).

    ``endpoint_url``, ``key``, ``secret``, ``anon`` and the rest are s3fs's own
    parameters; ``region``/``region_name`` go to ``client_kwargs``; retries are
    turned off in botocore, because ``Backend`` retries.
    """
    raw = dict(options or {})
    region = raw.pop("region", None) or raw.pop("region_name", None)
    kwargs = coerce_options(raw, s3fs.S3FileSystem)
    if region:
        kwargs.setdefault("client_kwargs", {})["region_name"] = region
    config = dict(kwargs.pop("config_kwargs", None) or {})
    config["retries"] = {"total_max_attempts": 1, "mode": "standard"}
    kwargs["config_kwargs"] = config
    return kwargs


class S3Store:
    """One bucket and key prefix."""

    atomic_cas = True

    def __init__(self, bucket: str, prefix: str, options: dict | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                                    **options_for_s3fs(options))

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _run(self, fn, *args):
        return fsspec.asyn.sync(self.fs.loop, fn, *args)

    async def _client(self):
        await self.fs.set_session()
        return await self.fs.get_s3(self.bucket)

    async def _get(self, name: str, byte_range: str | None) -> tuple[bytes, str]:
        client = await self._client()
        extra = {"Range": byte_range} if byte_range else {}
        resp = await client.get_object(Bucket=self.bucket, Key=self._key(name), **extra)
        async with resp["Body"] as body:
            data = await body.read()
        return data, resp.get("ETag", "")

    def get(self, name: str) -> bytes:
        return self._run(self._get, name, None)[0]

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            return self._run(self._get, name, f"bytes={offset}-{offset + length - 1}")[0]
        except ClientError as exc:
            if status_of(exc)[0] == 416:  # InvalidRange: starts past the end
                return b""
            raise

    def get_tagged(self, name: str) -> tuple[bytes, str] | None:
        try:
            return self._run(self._get, name, None)
        except ClientError as exc:
            if self.classify(exc) is Failure.MISSING:
                return None
            raise

    async def _head(self, name: str):
        client = await self._client()
        return await client.head_object(Bucket=self.bucket, Key=self._key(name))

    def head(self, name: str) -> tuple[int, float] | None:
        try:
            resp = self._run(self._head, name)
        except ClientError as exc:
            if status_of(exc)[0] == 404:
                return None
            raise
        return int(resp["ContentLength"]), resp["LastModified"].timestamp()

    async def _list(self, prefix: str) -> list[tuple[str, int]]:
        client = await self._client()
        out, token, start = [], None, len(self.prefix)
        while True:
            extra = {"ContinuationToken": token} if token else {}
            resp = await client.list_objects_v2(Bucket=self.bucket,
                                                Prefix=self._key(prefix), **extra)
            out += [(item["Key"][start:], int(item["Size"]))
                    for item in resp.get("Contents", [])]
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return sorted(out)

    def list(self, prefix: str) -> list[tuple[str, int]]:
        return self._run(self._list, prefix)

    async def _put(self, name: str, data: bytes, condition: dict) -> bool:
        client = await self._client()
        try:
            await client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data,
                                    **condition)
        except ClientError as exc:
            status, code = status_of(exc)
            if status in _REFUSED or ("IfMatch" in condition and code == "NoSuchKey"):
                return False
            raise
        return True

    def put_new(self, name: str, data: bytes, conditional: bool) -> None:
        if conditional:
            self._run(self._put, name, data, {"IfNoneMatch": "*"})
        elif self.head(name) is None:
            self._run(self._put, name, data, {})

    def put_if(self, name: str, data: bytes, expect: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        return self._run(self._put, name, data, condition)

    async def _delete(self, name: str, condition: dict) -> bool:
        client = await self._client()
        try:
            await client.delete_object(Bucket=self.bucket, Key=self._key(name), **condition)
        except ClientError as exc:
            status, code = status_of(exc)
            if condition and (status in _REFUSED or status == 404):
                return False
            raise
        return True

    def delete(self, name: str) -> None:
        self._run(self._delete, name, {})

    def delete_if(self, name: str, expect: str) -> bool:
        return self._run(self._delete, name, {"IfMatch": expect})

    def classify(self, exc: BaseException) -> Failure | None:
        if isinstance(exc, ClientError):
            status, code = status_of(exc)
            if code in _INVALID_CODES:
                return Failure.INVALID
            if status in (401, 403) or code in _AUTH_CODES:
                return Failure.AUTH
            if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
                return Failure.MISSING
            if status >= 500 or code in _TRANSIENT_CODES:
                return Failure.TRANSIENT
            return Failure.OTHER
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return Failure.AUTH
        if isinstance(exc, (HTTPClientError, BotoConnectionError, IncompleteReadError,
                            _AiohttpError, asyncio.TimeoutError)):
            return Failure.TRANSIENT
        if isinstance(exc, BotoCoreError):
            return Failure.OTHER
        return classify_oserror(exc)

    def close(self) -> None:
        s3 = getattr(self.fs, "_s3", None)
        if s3 is not None:
            s3fs.S3FileSystem.close_session(self.fs.loop, s3)
            self.fs._s3 = None
