"""One run at a time on an S3 output: a lock object that expires unless its holder renews it.

S3 has no file locks and no process to free one when its holder dies, so the lock is a lease:

- **taken** by creating ``PREFIX/.urbanfusion.lock`` with ``If-None-Match: *`` (S3 refuses the
  write when the object exists, so of two runs exactly one creates it);
- **renewed** by a thread every third of its time to live, each write conditional on the lock's
  ETag (``If-Match``), so a holder never renews a lock someone else took;
- **taken over** once it has expired: a run writes over the expired lock, again conditional on
  the ETag it read, so of two runs taking over the same dead lock one wins;
- **released** by a delete conditional on its ETag.

Expiry is judged on the server's clocks alone (the lock's ``Last-Modified`` against the ``Date``
of the reply that read it), so clocks that disagree between machines do not matter. A holder that
stalls past the time to live (a frozen VM) loses the lock; :meth:`S3Lease.check` then refuses to
publish, and the run's files, written under its own run id, are never pointed at.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from urbanfusion.pipeline.errors import OutputBusyError, RemoteStorageError
from urbanfusion.pipeline.object_store import S3Location, error_code, s3_errors
from urbanfusion.workflows.publish import LOCK, describe_owner, lock_owner

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Long enough for a renewal to survive a few slow requests, short enough that a dead run's
# output is free again within minutes.
LEASE_TTL_S = 120.0
_POLL_S = 5.0
# Replies of a conditional write that lost a race (412), or raced another write (409).
_LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict")


def _server_time(reply: Any) -> dt.datetime:
    """The ``Date`` header of an S3 reply: the server's clock."""
    date = reply["ResponseMetadata"]["HTTPHeaders"]["date"]
    return email.utils.parsedate_to_datetime(date)


class S3Lease:
    """The lock of one S3 output (:mod:`module docs <urbanfusion.workflows.s3_lock>`)."""

    def __init__(self, client: S3Client, where: S3Location, ttl_s: float = LEASE_TTL_S) -> None:
        """``ttl_s``: how long the lock lasts without a renewal."""
        self.client, self.where, self.ttl_s = client, where, ttl_s
        self.key = where.key(LOCK)
        self._etag: str | None = None
        self._renewed = 0.0  # time.monotonic() of the last renewal that S3 accepted
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``s3://bucket/prefix/.urbanfusion.lock``."""
        return f"s3://{self.where.bucket}/{self.key}"

    def _body(self) -> bytes:
        return json.dumps({**lock_owner(), "ttl_s": self.ttl_s}).encode()

    def _put(self, if_match: str | None = None) -> bool:
        """Create the lock (``if_match``: write over the one with that ETag).

        Returns:
            False when S3 says the condition failed: another run's lock is there.
        """
        from botocore.exceptions import ClientError

        with s3_errors(self.url, "writing the lock"):
            try:
                if if_match is None:
                    reply = self.client.put_object(
                        Bucket=self.where.bucket, Key=self.key, Body=self._body(), IfNoneMatch="*"
                    )
                else:
                    reply = self.client.put_object(
                        Bucket=self.where.bucket, Key=self.key, Body=self._body(), IfMatch=if_match
                    )
            except ClientError as e:
                if error_code(e) in _LOST_RACE:
                    return False
                raise
        self._etag, self._renewed = reply["ETag"], time.monotonic()
        return True

    def _current(self) -> tuple[str, dict[str, Any], bool] | None:
        """The lock as it is: (ETag, holder, expired), or None when there is none."""
        from botocore.exceptions import ClientError

        with s3_errors(self.url, "reading the lock"):
            try:
                reply = self.client.get_object(Bucket=self.where.bucket, Key=self.key)
            except ClientError as e:
                if error_code(e) in ("NoSuchKey", "404"):
                    return None
                raise
            body = reply["Body"].read()
        try:
            holder = json.loads(body)
            ttl = float(holder.get("ttl_s", self.ttl_s))
        except (ValueError, AttributeError, TypeError):
            holder, ttl = {}, self.ttl_s  # a lock written by hand: it still expires
        age = (_server_time(reply) - reply["LastModified"]).total_seconds()
        return reply["ETag"], holder, age > ttl

    def acquire(self, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> str:
        """Take the lock, waiting for its holder when ``wait``; then keep it renewed.

        Returns:
            '' or, when an expired lock was taken over, a line saying whose.

        Raises:
            OutputBusyError: another run holds the lock and ``wait`` is false.
            RemoteStorageError: S3 could not be reached or refused the request.
        """
        said = False
        while True:
            if self._put():
                self._start_renewing()
                return ""
            current = self._current()
            if current is None:
                continue  # released between the two requests
            etag, holder, expired = current
            if expired:
                if self._put(etag):
                    self._start_renewing()
                    return (
                        f"took over the expired lock {self.url} of {describe_owner(holder)} "
                        f"(not renewed for {self.ttl_s:.0f} s: the run had died)"
                    )
                continue  # another run took it over first
            if not wait:
                raise OutputBusyError(
                    f"{self.where.url} is being written by {describe_owner(holder)} (lock "
                    f"{self.url}); try again when it ends, or leave out --no-wait to wait for it"
                )
            if on_wait is not None and not said:
                on_wait(
                    f"waiting for {describe_owner(holder)} to finish writing {self.where.url} "
                    f"(its lock expires {self.ttl_s:.0f} s after it stops renewing it)"
                )
                said = True
            time.sleep(min(_POLL_S, self.ttl_s / 4))

    def _start_renewing(self) -> None:
        self._lost, self._stop = None, threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="s3-lock", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self._put(str(self._etag)):
                    self._lost = "another run took it over after it expired"
                    return
            except RemoteStorageError as e:  # S3 unreachable for a moment: try again
                if time.monotonic() - self._renewed > self.ttl_s:
                    self._lost = f"it could not be renewed for {self.ttl_s:.0f} s ({e})"
                    return

    def check(self) -> None:
        """Raise unless the lock is still this run's (called right before publishing).

        Raises:
            RemoteStorageError: the lock was lost; nothing may be published.
        """
        if self._lost is None and time.monotonic() - self._renewed > self.ttl_s:
            self._lost = f"it was not renewed for {self.ttl_s:.0f} s"
        if self._lost is not None:
            raise RemoteStorageError(
                f"this run lost the lock {self.url}: {self._lost}; nothing was published, run again"
            )

    def release(self) -> None:
        """Stop renewing, then delete the lock if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost is None and self._etag is not None:
            # A lock that cannot be deleted expires: never hide the run's own error behind this.
            with contextlib.suppress(RemoteStorageError), s3_errors(self.url, "releasing the lock"):
                self.client.delete_object(
                    Bucket=self.where.bucket, Key=self.key, IfMatch=self._etag
                )
        self._etag = None

    @contextlib.contextmanager
    def held(
        self, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the lock for the block (:meth:`acquire`, then :meth:`release`)."""
        note = self.acquire(wait, on_wait)
        if note and on_wait is not None:
            on_wait(note)
        try:
            yield
        finally:
            self.release()
