"""Where resource bytes live: a local directory or an S3 bucket, behind one small interface.

Objects stream in and out in chunks; nothing is read whole into memory. Above the multipart
threshold an S3 upload goes part by part, so memory stays near one part whatever the size.
Errors of botocore and the file system are translated here, where they enter, into
`BackendFailure` (with a reason and a message that says what to check) or `NotFound`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

if TYPE_CHECKING:
    import boto3

from voipcloud.domain.errors import NotFound
from voipcloud.domain.storage import (
    BackendFailure,
    BackendType,
    FailureReason,
    ResourceKind,
    S3Settings,
)

CHUNK = 1024 * 1024
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class S3Tuning:
    multipart_threshold: int = 8 * MiB  # objects above this go up in parts
    part_size: int = 8 * MiB  # S3 wants parts of at least 5 MiB (but the last)
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_attempts: int = 2

    @classmethod
    def from_env(cls) -> S3Tuning:
        """`VOIPCLOUD_STORAGE_MULTIPART_MIB`, `VOIPCLOUD_STORAGE_TIMEOUT` (seconds)."""
        tuning = cls()
        if mib := os.environ.get("VOIPCLOUD_STORAGE_MULTIPART_MIB"):
            size = max(5, int(mib)) * MiB
            tuning = cls(multipart_threshold=size, part_size=size)
        if seconds := os.environ.get("VOIPCLOUD_STORAGE_TIMEOUT"):
            value = float(seconds)
            tuning = cls(
                multipart_threshold=tuning.multipart_threshold,
                part_size=tuning.part_size,
                connect_timeout=value,
                read_timeout=value,
            )
        return tuning


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Backend(Protocol):
    type: BackendType

    def put(self, key: str, source: Readable, *, size: int, content_type: str) -> None: ...

    def open(self, key: str, *, size: int | None = None) -> Iterator[bytes]:
        """Open eagerly (errors surface here, and a copy whose size is not `size`), then
        yield the bytes in chunks."""
        ...

    def delete(self, key: str) -> None: ...


def digest(chunks: Iterator[bytes]) -> tuple[str, int]:
    """sha256 and size of a stream, read chunk by chunk."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


class ChunkReader:
    """A file-like reader over a chunk iterator that hashes what passes through it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self.hasher = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if n < 0 or n >= len(self._buffer):
            out = bytes(self._buffer)
            self._buffer.clear()
        else:
            out = bytes(self._buffer[:n])
            del self._buffer[:n]
        self.hasher.update(out)
        self.size += len(out)
        return out


def damaged(kind: ResourceKind, key: str, found: int, size: int, where: str) -> BackendFailure:
    return BackendFailure(
        FailureReason.CHECKSUM_MISMATCH,
        f"The copy of {kind.value} resource {key} in {where} is damaged: {found} bytes where "
        f"{size} were stored. Store it again, or restore it from a backup.",
    )


# --- local directory ----------------------------------------------------------------------

CREATE_ATTEMPTS = 5  # tries to create a file whose directory a delete removes meanwhile


def _make_and_create(part: Path) -> int:
    part.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # the controller's user alone reads the bytes from the disk (others use the API)
    return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _blocked_by_a_file(directory: Path) -> bool:
    """True if `directory` or a directory above it is something other than a directory (no
    retry can help). One stat per path: a directory that a delete removes between two looks
    (exists, then is it a directory) would pass for a file."""
    for path in (directory, *directory.parents):
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISDIR(mode):
            return True
    return False


class LocalBackend:
    type = BackendType.LOCAL

    def __init__(self, root: Path, *, kind: ResourceKind) -> None:
        self.root = root
        self.kind = kind

    def _path(self, key: str) -> Path:
        """The file of `key`; refused if a symbolic link under the root leads outside it."""
        path = self.root / key
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise BackendFailure(
                FailureReason.PATH_NOT_ALLOWED,
                f"The {self.kind.value} resource {key} would be outside the local directory "
                f"{self.root} (a symbolic link leads out of it): nothing was read or written.",
            )
        return path

    def put(self, key: str, source: Readable, *, size: int, content_type: str) -> None:
        path = self._path(key)
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            descriptor = self._create(part)
            with open(descriptor, "wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, path)
        except BaseException as exc:  # also a source failing mid-stream: no .part left
            with contextlib.suppress(OSError):
                part.unlink()
            if isinstance(exc, OSError):
                raise self._failure(exc, "write to") from None
            raise

    @staticmethod
    def _create(part: Path) -> int:
        """Create `part` and the directories above it. A delete elsewhere (another request, a
        migration's thread, another worker) may remove a directory it found empty between the
        two steps: then both are done again. Once the file is there, its directory is not empty
        and stays."""
        for _ in range(CREATE_ATTEMPTS - 1):
            try:
                return _make_and_create(part)
            except (FileNotFoundError, FileExistsError):
                # FileExistsError: mkdir found the directory, which was gone when it checked
                if _blocked_by_a_file(part.parent):
                    raise
        return _make_and_create(part)  # the last try: its error is the answer

    def open(self, key: str, *, size: int | None = None) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise NotFound(
                f"The {self.kind.value} resource {key} is missing from {self.root}."
            ) from None
        except OSError as exc:
            raise self._failure(exc, "read from") from None
        found = os.fstat(handle.fileno()).st_size
        if size is not None and found != size:
            handle.close()
            raise damaged(self.kind, key, found, size, f"the local directory {self.root}")
        return self._chunks(handle)

    @staticmethod
    def _chunks(handle: BinaryIO) -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._failure(exc, "delete from") from None
        # drop directories left empty, up to the root
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def _failure(self, exc: OSError, doing: str) -> BackendFailure:
        reason = (
            FailureReason.ACCESS_DENIED
            if isinstance(exc, PermissionError)
            else FailureReason.IO_ERROR
        )
        return BackendFailure(
            reason,
            f"Could not {doing} the local storage directory {self.root} of {self.kind.value}: "
            f"{exc.strerror or exc}. Check that the directory exists and voipcloud may write it.",
        )


# --- S3 -----------------------------------------------------------------------------------

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId": "the access key ID is unknown to the store",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "InvalidToken": "the credentials are invalid",
    "InvalidClientTokenId": "the access key ID is unknown to the store",
    "ExpiredToken": "the credentials have expired",
    "AuthFailure": "the credentials were refused",
}


class S3Backend:
    type = BackendType.S3

    def __init__(self, settings: S3Settings, *, kind: ResourceKind, tuning: S3Tuning) -> None:
        self.settings = settings
        self.kind = kind
        self.tuning = tuning
        # botocore is imported with the first S3 backend (s3_client), not with this module: a
        # controller that stores nothing in S3 never loads it (about 25 MiB per process)
        try:
            self._client = s3_client(settings, tuning)
        except (_errors()[0], ValueError) as exc:  # settings botocore cannot build a client of
            raise BackendFailure(
                FailureReason.NOT_CONFIGURED,
                f"The S3 settings of {kind.value} are not usable: {type(exc).__name__}: "
                f"{str(exc)[:200]}. Correct the endpoint URL and region.",
            ) from None

    def object_key(self, key: str) -> str:
        prefix = self.settings.prefix.strip("/")
        return f"{prefix}/{key}" if prefix else key

    def _extra(self, content_type: str) -> dict[str, str]:
        extra = {"ContentType": content_type}
        if self.settings.server_side_encryption:
            extra["ServerSideEncryption"] = "AES256"
        return extra

    def put(self, key: str, source: Readable, *, size: int, content_type: str) -> None:
        bucket, name = self.settings.bucket, self.object_key(key)
        try:
            if size <= self.tuning.multipart_threshold:
                body = source.read(size)
                self._client.put_object(
                    Bucket=bucket, Key=name, Body=body, **self._extra(content_type)
                )
                return
            self._multipart(bucket, name, source, content_type)
        except _errors() as exc:
            raise self.translate(exc, "write") from None

    def _multipart(self, bucket: str, name: str, source: Readable, content_type: str) -> None:
        upload = self._client.create_multipart_upload(
            Bucket=bucket, Key=name, **self._extra(content_type)
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            number = 1
            while chunk := source.read(self.tuning.part_size):
                answer = self._client.upload_part(
                    Bucket=bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                number += 1
                del chunk
            self._client.complete_multipart_upload(
                Bucket=bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(*_errors()):
                self._client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
            raise

    def open(self, key: str, *, size: int | None = None) -> Iterator[bytes]:
        try:
            answer = self._client.get_object(Bucket=self.settings.bucket, Key=self.object_key(key))
        except _errors() as exc:
            if _code(exc) in {"NoSuchKey", "404"}:
                raise NotFound(
                    f"The {self.kind.value} resource {key} is missing from bucket "
                    f"{self.settings.bucket}."
                ) from None
            raise self.translate(exc, "read") from None
        found = answer.get("ContentLength")
        if size is not None and found is not None and found != size:
            answer["Body"].close()
            raise damaged(self.kind, key, found, size, f"bucket {self.settings.bucket}")
        return self._chunks(answer["Body"])

    def _chunks(self, body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK)
        except _errors() as exc:
            raise self.translate(exc, "read") from None
        finally:
            body.close()

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.settings.bucket, Key=self.object_key(key))
        except _errors() as exc:
            raise self.translate(exc, "delete") from None

    def translate(self, exc: Exception, doing: str) -> BackendFailure:
        """One botocore error → the reason and a message that says what to check."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        where = f"S3 storage of {self.kind.value} (bucket {self.settings.bucket}"
        where += f" at {self.settings.endpoint_url})" if self.settings.endpoint_url else ")"
        code = _code(exc)
        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
            return BackendFailure(
                FailureReason.TIMEOUT,
                f"The {where} did not answer in time while trying to {doing}. "
                "Check the endpoint URL and the network, then try again.",
            )
        if isinstance(exc, EndpointConnectionError):
            return BackendFailure(
                FailureReason.UNREACHABLE,
                f"Could not connect to the {where}. Check the endpoint URL and region, and that "
                "the store is running and reachable from the controller.",
            )
        if code in _CREDENTIAL_CODES:
            return BackendFailure(
                FailureReason.BAD_CREDENTIALS,
                f"The {where} refused the credentials: {_CREDENTIAL_CODES[code]} ({code}). "
                "Check the access key ID and secret key in Storage Configuration.",
            )
        if code == "NoSuchBucket":
            return BackendFailure(
                FailureReason.NO_SUCH_BUCKET,
                f"The bucket {self.settings.bucket} does not exist for the {where}. "
                "Create it, or correct the bucket name and region.",
            )
        if code in {"AccessDenied", "AllAccessDisabled", "403"}:
            return BackendFailure(
                FailureReason.ACCESS_DENIED,
                f"The {where} denied access while trying to {doing}. Allow this access key "
                "s3:PutObject, s3:GetObject and s3:DeleteObject on the bucket and prefix.",
            )
        if isinstance(exc, ClientError):
            message = exc.response.get("Error", {}).get("Message") or "no details"
            return BackendFailure(
                FailureReason.IO_ERROR,
                f"The {where} refused to {doing}: {code}: {message}.",
            )
        return BackendFailure(
            FailureReason.UNREACHABLE,
            f"Could not {doing} the {where}: {type(exc).__name__}: {str(exc)[:200]}.",
        )


_clients: dict[tuple[str | None, str, str, str, S3Tuning], Any] = {}
_clients_lock = threading.Lock()
_session: boto3.session.Session | None = None
MAX_CLIENTS = 32


def s3_client(settings: S3Settings, tuning: S3Tuning) -> Any:
    """Clients are costly to build (the service model loads) and thread-safe: share them."""
    global _session
    cache_key = (
        settings.endpoint_url,
        settings.region,
        settings.access_key_id,
        settings.secret_access_key,
        tuning,
    )
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            import boto3
            from botocore.config import Config

            _session = _session or boto3.session.Session()
            client = _session.client(
                "s3",
                region_name=settings.region,
                endpoint_url=settings.endpoint_url,
                aws_access_key_id=settings.access_key_id,
                aws_secret_access_key=settings.secret_access_key,
                config=Config(
                    connect_timeout=tuning.connect_timeout,
                    read_timeout=tuning.read_timeout,
                    retries={"max_attempts": tuning.max_attempts, "mode": "standard"},
                    s3={"addressing_style": "path"},
                    max_pool_connections=20,
                ),
            )
            if len(_clients) >= MAX_CLIENTS:
                _clients.pop(next(iter(_clients)))
            _clients[cache_key] = client
        return client


def _errors() -> tuple[type[Exception], type[Exception]]:
    """botocore's two error bases, imported when first needed (an S3 backend exists by then)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def _code(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""
