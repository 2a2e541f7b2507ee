"""A moto S3 server in a child process, and buckets on it (see ``docs/testing.md``)."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import itertools
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import anyio
import anyio.to_thread

from kl3m_data_client.testing._corpus import DEFAULT_BUCKET, Corpus, generate_corpus

__all__ = ["DEFAULT_REGION", "LocalBucket", "LocalS3Server", "ServerError"]

DEFAULT_REGION: Final = "us-east-1"
_ACCESS_KEY: Final = "testing"
_SECRET_KEY: Final = "testing"
_SRC_ROOT: Final = str(Path(__file__).resolve().parents[2])


class ServerError(RuntimeError):
    """The local S3 server failed to start or to execute a command."""


# PR_SET_DEATHSIG fires when the *thread* that forked the child exits, not the process. All
# children are therefore spawned from one long-lived thread, so that a server started from a
# short-lived worker thread (e.g. ``anyio.to_thread``) is not killed when that thread retires.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kl3m-spawn")
# Generates the parent's copy of a corpus while the server process builds its own.
_WARMER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kl3m-corpus")
_LIVE: weakref.WeakSet[LocalS3Server] = weakref.WeakSet()
_BUCKET_COUNTER = itertools.count(1)


def _close_all() -> None:
    for server in list(_LIVE):
        server.close()


atexit.register(_close_all)


class LocalS3Server:
    """moto's S3 server in a child process on a free loopback port.

    ``with LocalS3Server() as server:`` (or ``async with``) starts it; :meth:`close` stops it
    and reaps the child. The child also exits when this process dies (Linux: parent-death
    signal; everywhere: EOF on its stdin). Buckets are created with :meth:`create_bucket`.
    """

    def __init__(self, *, host: str = "127.0.0.1", startup_timeout: float = 60.0) -> None:
        self.host = host
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._port: int | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> LocalS3Server:
        """Start the child and wait until it answers HTTP (idempotent)."""
        with self._lock:
            if self._proc is not None:
                return self
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (_SRC_ROOT, env.get("PYTHONPATH", "")) if p
            )
            env.setdefault("PYTHONUNBUFFERED", "1")
            cmd = [
                sys.executable,
                "-m",
                "kl3m_data_client.testing._launcher",
                "--host",
                self.host,
                "--parent-pid",
                str(os.getpid()),
            ]
            stderr = self._stderr
            self._proc = _SPAWNER.submit(
                subprocess.Popen,
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                close_fds=True,
                # own process group: a Ctrl-C (SIGINT to the foreground group) or a test
                # signalling its group must not kill the server under a running session
                start_new_session=True,
            ).result()
            _LIVE.add(self)
            try:
                deadline = time.monotonic() + self.startup_timeout
                ready = self._read_message(deadline)
                if ready.get("event") != "ready":
                    raise ServerError(f"unexpected first message from server: {ready!r}")
                self._port = int(ready["port"])
                self._wait_http(deadline)
            except BaseException:
                self._close_locked()
                raise
        return self

    async def astart(self) -> LocalS3Server:
        """:meth:`start` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.start)
        return self

    def close(self) -> None:
        """Stop the child and wait for it; safe to call twice."""
        with self._lock:
            self._close_locked()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)

    def _close_locked(self) -> None:
        proc, self._proc = self._proc, None
        self._port = None
        _LIVE.discard(self)
        if proc is not None:
            try:
                if proc.stdin is not None and proc.poll() is None:
                    proc.stdin.write(b'{"op": "shutdown"}\n')
                    proc.stdin.flush()
            except OSError:
                pass
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> LocalS3Server:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- properties
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """Process id of the child."""
        return self._require_proc().pid

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServerError("server is not running; call start() or use 'with'")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` (use path-style addressing)."""
        return f"http://{self.host}:{self.port}"

    def boto_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", ...)`` / aiobotocore ``create_client``."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": DEFAULT_REGION,
            "aws_access_key_id": _ACCESS_KEY,
            "aws_secret_access_key": _SECRET_KEY,
        }

    # ----------------------------------------------------------------- buckets
    def create_bucket(
        self,
        bucket: str | None = None,
        *,
        n_documents: int = 0,
        seed: int = 0,
        dirty: bool = False,
        objects: Corpus | Mapping[str, bytes] | None = None,
    ) -> LocalBucket:
        """Create a bucket on this server and fill it.

        Without ``objects`` the server process generates ``generate_corpus(n_documents,
        seed=seed, dirty=dirty)`` itself and loads it into moto's memory (fast; an empty bucket
        when ``n_documents == 0`` and not ``dirty``). With ``objects`` they are uploaded over
        HTTP with aiobotocore. ``bucket`` defaults to a fresh ``test-N.kl3m.local`` name.
        """
        b = LocalBucket(
            n_documents,
            seed=seed,
            dirty=dirty,
            bucket=bucket or _fresh_bucket_name(),
            objects=objects,
            server=self,
        )
        return b.start()

    def delete_bucket(self, bucket: str) -> None:
        """Delete a bucket and everything in it."""
        self._command({"op": "delete_bucket", "bucket": bucket})

    def upload(
        self, bucket: str, objects: Corpus | Mapping[str, bytes], *, concurrency: int = 32
    ) -> None:
        """PUT objects into an existing bucket over HTTP, ``concurrency`` at a time."""
        _run_async(functools.partial(self.upload_async, concurrency=concurrency), bucket, objects)

    async def upload_async(
        self, bucket: str, objects: Corpus | Mapping[str, bytes], *, concurrency: int = 32
    ) -> None:
        """Async :meth:`upload` (asyncio event loop; aiobotocore)."""
        data = objects.objects if isinstance(objects, Corpus) else objects
        await _upload(self.boto_kwargs(), bucket, data, concurrency)

    def ping(self) -> None:
        """Round-trip a no-op command (raises :class:`ServerError` if the child is gone)."""
        self._command({"op": "ping"})

    def stop_serving(self) -> None:
        """Start an outage: close the listening socket and cut every open connection.

        Connections are refused until :meth:`restart_serving`; the buckets stay in the
        server's memory (the child process keeps running).
        """
        self._command({"op": "stop_http"})

    def schedule_outage(
        self, after_requests: int, *, reject: int | None = None, query: str | None = None
    ) -> None:
        """Stop serving once ``after_requests`` more requests have arrived (that request is
        answered, then open connections are cut). With ``query``, the outage starts instead
        at the first such request whose query string contains ``query`` (for instance
        ``"continuation-token"``: the second page of a listing), which is not answered.
        With ``reject``, the port then resets that many connection attempts and the server
        comes back by itself (a short outage, ended by the clients' own retries); without,
        it stays down until :meth:`restart_serving`. Driven by requests, not by time.
        """
        cmd = {"op": "schedule_outage", "after": after_requests, "reject": reject, "query": query}
        self._command(cmd)

    def http_status(self) -> dict[str, Any]:
        """``serving``, ``requests`` (count), ``outages`` (count), ``rejected`` (connections
        reset during scheduled outages) and ``armed`` (an outage is scheduled)."""
        reply = self._command({"op": "http_status"})
        return {k: reply[k] for k in ("serving", "requests", "outages", "rejected", "armed")}

    def restart_serving(self) -> None:
        """End an outage: listen again on the same port and wait until HTTP answers."""
        reply = self._command({"op": "start_http"})
        if int(reply["port"]) != self._port:  # pragma: no cover - the port was taken
            raise ServerError(f"server came back on port {reply['port']}, not {self._port}")
        self._wait_http(time.monotonic() + self.startup_timeout)

    # ----------------------------------------------------------------- protocol
    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ServerError("server is not running; call start() or use 'with'")
        return self._proc

    def _command(self, cmd: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        with self._lock:
            proc = self._require_proc()
            cmd = {**cmd, "id": next(self._ids)}
            assert proc.stdin is not None
            try:
                proc.stdin.write((json.dumps(cmd) + "\n").encode("utf-8"))
                proc.stdin.flush()
            except OSError as exc:
                raise ServerError(f"server is gone: {exc}{self._stderr_tail()}") from exc
            reply = self._read_message(time.monotonic() + timeout)
        if reply.get("id") != cmd["id"]:
            raise ServerError(f"out-of-order reply {reply!r} to {cmd!r}")
        if not reply.get("ok"):
            raise ServerError(f"{cmd['op']} failed: {reply.get('error')}")
        return reply

    def _read_message(self, deadline: float) -> dict[str, Any]:
        proc = self._require_proc()
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerError(f"timed out waiting for the server{self._stderr_tail()}")
            readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not readable:
                if proc.poll() is not None:
                    raise ServerError(
                        f"server exited with code {proc.returncode}{self._stderr_tail()}"
                    )
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                proc.wait(timeout=5)
                raise ServerError(f"server exited with code {proc.returncode}{self._stderr_tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def _wait_http(self, deadline: float) -> None:
        url = f"{self.endpoint_url}/"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    resp.read()
                return
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise ServerError(f"server does not answer at {url}: {exc}") from exc
                time.sleep(0.02)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 4000))
            tail = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"\n--- server stderr (tail) ---\n{tail}" if tail else ""


class LocalBucket:
    """A KL3M-format bucket served by a local moto S3 server.

    By default it starts its own :class:`LocalS3Server` and fills the bucket with
    ``generate_corpus(n_documents, seed=seed, dirty=dirty)``, generated inside the server
    process (a 1,000-document bucket is ready in a couple of seconds)::

        with LocalBucket(1000, dirty=True) as b:
            client = KL3MClient(**b.client_kwargs())
            expected = b.corpus.documents

    Pass ``objects`` (a :class:`Corpus` or ``{key: bytes}``) to upload your own objects over
    HTTP instead, and ``server`` to put the bucket on an existing server (closing the bucket
    then deletes it; otherwise closing stops the server).
    """

    def __init__(
        self,
        n_documents: int = 200,
        *,
        seed: int = 0,
        dirty: bool = False,
        bucket: str = DEFAULT_BUCKET,
        objects: Corpus | Mapping[str, bytes] | None = None,
        server: LocalS3Server | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
    ) -> None:
        self.bucket = bucket
        self.n_documents = n_documents
        self.seed = seed
        self.dirty = dirty
        self._objects = objects
        self._owns_server = server is None
        self.server = server or LocalS3Server(host=host, startup_timeout=startup_timeout)
        self._corpus: Corpus | None = None
        self._corpus_future: concurrent.futures.Future[Corpus] | None = None
        self._started = False
        self._closed = False
        self._t0 = 0.0
        #: Seconds the last :meth:`start` took (server start + bucket fill).
        self.startup_seconds: float | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> LocalBucket:
        """Start the server (if owned), create and fill the bucket (idempotent)."""
        if self._start_bucket():
            self._finish_start()
        return self

    async def astart(self) -> LocalBucket:
        """:meth:`start` without blocking the event loop."""
        if await anyio.to_thread.run_sync(self._start_bucket):
            await self._finish_start_async()
        return self

    def _start_bucket(self) -> bool:
        """Start the server and create the bucket; True if user objects still need uploading."""
        if self._started:
            return False
        if self._closed:
            raise ServerError("bucket was closed")
        self._t0 = time.perf_counter()
        if self._owns_server:
            self.server.start()
        elif not self.server.running:
            raise ServerError("the server of this bucket is not running")
        if self._objects is None and self._corpus_future is None:
            # overlap: tokenizing releases the GIL, and the child works in parallel anyway
            self._corpus_future = _WARMER.submit(
                generate_corpus, self.n_documents, seed=self.seed, dirty=self.dirty
            )
        try:
            if self._objects is None:
                self.server._command(
                    {
                        "op": "create_bucket",
                        "bucket": self.bucket,
                        "n_documents": self.n_documents,
                        "seed": self.seed,
                        "dirty": self.dirty,
                    }
                )
                self._mark_started()
                return False
            self.server._command({"op": "create_bucket", "bucket": self.bucket})
        except BaseException:
            if self._owns_server:
                self.server.close()
            raise
        return True

    def _mark_started(self) -> None:
        self._started = True
        self.startup_seconds = time.perf_counter() - self._t0

    def _finish_start(self) -> None:
        assert self._objects is not None
        try:
            self.server.upload(self.bucket, self._objects)
        except BaseException:
            self._started = True
            self.close()
            raise
        self._mark_started()

    async def _finish_start_async(self) -> None:
        assert self._objects is not None
        try:
            await self.server.upload_async(self.bucket, self._objects)
        except BaseException:
            self._started = True
            await self.aclose()
            raise
        self._mark_started()

    def close(self) -> None:
        """Stop the owned server, or delete the bucket from a shared one (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_server:
            self.server.close()
        elif self._started and self.server.running:
            self.server.delete_bucket(self.bucket)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)

    def __enter__(self) -> LocalBucket:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> LocalBucket:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- access
    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def corpus(self) -> Corpus:
        """What the bucket holds (ground truth); generated lazily in this process."""
        if self._corpus is None:
            if self._corpus_future is not None:
                self._corpus = self._corpus_future.result()
            elif self._objects is None:
                self._corpus = generate_corpus(self.n_documents, seed=self.seed, dirty=self.dirty)
            elif isinstance(self._objects, Corpus):
                self._corpus = self._objects
            else:
                self._corpus = Corpus.from_objects(self._objects)
        return self._corpus

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``AsyncKL3MClient(**kw)`` / ``KL3MClient(**kw)``."""
        return {
            "bucket": self.bucket,
            "endpoint_url": self.endpoint_url,
            "region": DEFAULT_REGION,
            "aws_access_key_id": _ACCESS_KEY,
            "aws_secret_access_key": _SECRET_KEY,
        }

    def boto_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", ...)`` / aiobotocore ``create_client``."""
        return self.server.boto_kwargs()

    def put_objects(self, objects: Corpus | Mapping[str, bytes], *, concurrency: int = 32) -> None:
        """Upload more objects into this bucket over HTTP (not reflected in :attr:`corpus`)."""
        self.server.upload(self.bucket, objects, concurrency=concurrency)

    async def put_objects_async(
        self, objects: Corpus | Mapping[str, bytes], *, concurrency: int = 32
    ) -> None:
        await self.server.upload_async(self.bucket, objects, concurrency=concurrency)

    def __repr__(self) -> str:
        state = "running" if self._started and not self._closed else "stopped"
        return f"<LocalBucket {self.bucket!r} {state} n_documents={self.n_documents}>"


def _fresh_bucket_name() -> str:
    return f"test-{os.getpid()}-{next(_BUCKET_COUNTER)}.kl3m.local"


def _run_async(fn: Any, *args: Any) -> None:
    """Run an async function to completion from sync code, even inside a running loop."""
    try:
        import asyncio

        asyncio.get_running_loop()
    except RuntimeError:
        anyio.run(fn, *args)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(anyio.run, fn, *args).result()


async def _upload(
    boto_kwargs: Mapping[str, str],
    bucket: str,
    objects: Mapping[str, bytes],
    concurrency: int,
) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    if not objects:
        return
    concurrency = max(1, min(concurrency, len(objects)))
    config = AioConfig(
        s3={"addressing_style": "path"},
        max_pool_connections=concurrency,
        retries={"max_attempts": 5, "mode": "standard"},
        request_checksum_calculation="when_required",
    )
    session = get_session()
    async with session.create_client("s3", config=config, **boto_kwargs) as client:
        items = iter(objects.items())

        async def worker() -> None:
            for key, data in items:
                await client.put_object(Bucket=bucket, Key=key, Body=data)

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
