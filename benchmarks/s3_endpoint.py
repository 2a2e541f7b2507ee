"""A small read-only S3-compatible endpoint for benchmarks (raw asyncio, HTTP/1.1 keep-alive).

Serves a bucket from memory: ListObjectsV2 (prefix, delimiter, max-keys, continuation-token,
start-after, encoding-type=url), GetObject (with a single ``Range``), HeadObject, HeadBucket,
GetBucketLocation; path-style ``/{bucket}/{key}`` (the bucket name may have dots). Signatures
are not checked. ``--latency-ms`` delays every response with ``loop.call_later`` (no CPU is
spent while waiting). Every header block is built once at start, so a GET costs the server a
few microseconds of CPU: it is never the bottleneck (``python s3_endpoint.py loadgen`` checks).

Usage (normally started by ``benchmarks/run.py``)::

    python benchmarks/s3_endpoint.py serve --spec bucket.pkl --latency-ms 20
        # prints "PORT <n>" on stdout once listening; stops when stdin closes, on SIGTERM
        # or after --max-seconds
    python benchmarks/s3_endpoint.py loadgen --url http://127.0.0.1:<n>/<bucket>/<key> ...

The spec is a pickle ``{"bucket": str, "objects": {key: bytes}, "virtual": [(prefix, n,
suffix, pool_prefix)]}``; a virtual entry adds keys ``{prefix}{i:08d}{suffix}`` for i < n
whose bodies cycle through the objects under ``pool_prefix`` (bodies are shared).
``GET /__stats`` answers ``{"requests": n, "cpu": seconds}`` (for the capacity check).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import hashlib
import json
import os
import pickle
import resource
import signal
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote
from xml.sax.saxutils import escape

LAST_MODIFIED_HTTP = "Sat, 01 Mar 2025 12:00:00 GMT"
LAST_MODIFIED_ISO = "2025-03-01T12:00:00.000Z"
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_MAX_KEY = "\U0010ffff"


def _content_type(key: str) -> str:
    if key.endswith(".json"):
        return "application/json"
    if key.endswith(".gz"):
        return "application/gzip"
    return "binary/octet-stream"


class Body:
    """One stored body with its precomputed response heads."""

    __slots__ = ("data", "etag", "get_head", "head_head")

    def __init__(self, key: str, data: bytes) -> None:
        self.data = data
        self.etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        common = (
            f"x-amz-request-id: BENCH0000000000\r\n"
            f"Last-Modified: {LAST_MODIFIED_HTTP}\r\n"
            f'ETag: "{self.etag}"\r\n'
            f"Accept-Ranges: bytes\r\n"
            f"Content-Type: {_content_type(key)}\r\n"
            f"Server: AmazonS3\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.get_head = b"HTTP/1.1 200 OK\r\n" + common
        self.head_head = self.get_head


class Bucket:
    """Sorted keys (Python str order equals S3's UTF-8 byte order) -> bodies."""

    def __init__(self, name: str, objects: dict[str, bytes], virtual: list[tuple]) -> None:
        self.name = name
        self.bodies: dict[str, Body] = {}
        for key, data in objects.items():
            self.bodies[key] = Body(key, data)
        for prefix, n, suffix, pool_prefix in virtual:
            pool = [self.bodies[k] for k in sorted(objects) if k.startswith(pool_prefix)]
            pool = [b for b in pool if len(b.data) < 200_000] or pool
            for i in range(n):
                body = pool[i % len(pool)]
                self.bodies[f"{prefix}{i:08d}{suffix}"] = body
        self.keys = sorted(self.bodies)

    def list_v2(self, q: dict[str, str]) -> bytes:
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        try:
            max_keys = max(0, min(1000, int(q.get("max-keys", "1000"))))
        except ValueError:
            max_keys = 1000
        token = q.get("continuation-token")
        start_after = q.get("start-after", "")
        url = q.get("encoding-type") == "url"
        enc = (lambda s: quote(s, safe="/~")) if url else escape
        after = start_after
        if token:
            try:
                after = max(after, base64.urlsafe_b64decode(token.encode()).decode("utf-8"))
            except Exception:
                return b""
        keys = self.keys
        i = bisect.bisect_right(keys, after) if after else 0
        i = max(i, bisect.bisect_left(keys, prefix))
        contents: list[str] = []
        prefixes: list[str] = []
        last = ""
        truncated = False
        n = len(keys)
        while i < n:
            key = keys[i]
            if not key.startswith(prefix):
                break
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            if delimiter:
                j = key.find(delimiter, len(prefix))
                if j >= 0:
                    cp = key[: j + len(delimiter)]
                    prefixes.append(cp)
                    last = cp + _MAX_KEY  # resume after every key under this prefix
                    i = bisect.bisect_left(keys, last)
                    continue
            body = self.bodies[key]
            contents.append(
                f"<Contents><Key>{enc(key)}</Key><LastModified>{LAST_MODIFIED_ISO}"
                f"</LastModified><ETag>&quot;{body.etag}&quot;</ETag><Size>{len(body.data)}"
                f"</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
            last = key
            i += 1
        parts = [
            _XML_HEAD,
            f'<ListBucketResult xmlns="{_NS}"><Name>{escape(self.name)}</Name>',
            f"<Prefix>{enc(prefix)}</Prefix>",
        ]
        if token:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if start_after:
            parts.append(f"<StartAfter>{enc(start_after)}</StartAfter>")
        parts.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
        parts.append(f"<MaxKeys>{max_keys}</MaxKeys>")
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if truncated:
            nxt = base64.urlsafe_b64encode(last.encode("utf-8")).decode()
            parts.append(f"<NextContinuationToken>{nxt}</NextContinuationToken>")
        parts.extend(contents)
        parts.extend(
            f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in prefixes
        )
        parts.append("</ListBucketResult>")
        return "".join(parts).encode("utf-8")


def _response(status: str, body: bytes, ctype: str = "application/xml") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nx-amz-request-id: BENCH0000000000\r\nServer: AmazonS3\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _error(status: str, code: str, message: str, resource: str, head: bool = False) -> bytes:
    body = (
        f"{_XML_HEAD}<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>BENCH0000000000</RequestId></Error>"
    ).encode()
    if head:
        return (
            f"HTTP/1.1 {status}\r\nx-amz-request-id: BENCH0000000000\r\n"
            f"Content-Type: application/xml\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    return _response(status, body)


class Stats:
    requests = 0


class S3Protocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive; requests of one connection are answered in order."""

    def __init__(self, bucket: Bucket, latency: float) -> None:
        self.bucket = bucket
        self.latency = latency
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.skip = 0  # request body bytes still to discard
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.skip:
            take = min(self.skip, len(data))
            self.skip -= take
            data = data[take:]
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536 and self.transport is not None:
                    self.transport.close()
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            lines = head.split(b"\r\n")
            try:
                method, target, _version = lines[0].decode("latin-1").split(" ", 2)
            except ValueError:
                if self.transport is not None:
                    self.transport.close()
                return
            length = 0
            rng = None
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or b"0")
                elif name == b"range":
                    rng = value.strip().decode("latin-1")
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                take = min(length, len(self.buf))
                self.buf = self.buf[take:]
                self.skip = length - take
            Stats.requests += 1
            out = self.handle(method, target, rng)
            if self.latency > 0:
                self.loop.call_later(self.latency, self._send, out, close)
            else:
                self._send(out, close)

    def _send(self, out: bytes | tuple[bytes, bytes], close: bool) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if isinstance(out, tuple):
            t.writelines(out)
        else:
            t.write(out)
        if close:
            t.close()

    def handle(self, method: str, target: str, rng: str | None) -> bytes | tuple[bytes, bytes]:
        path, _, query = target.partition("?")
        q = dict(parse_qsl(query, keep_blank_values=True))
        path = unquote(path)
        if path == "/__stats":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            body = json.dumps(
                {"requests": Stats.requests, "cpu": ru.ru_utime + ru.ru_stime}
            ).encode()
            return _response("200 OK", body, "application/json")
        bucket_name, _, key = path.lstrip("/").partition("/")
        b = self.bucket
        head = method == "HEAD"
        if bucket_name != b.name:
            return _error("404 Not Found", "NoSuchBucket", "no such bucket", path, head)
        if not key:
            if method == "GET" and "location" in q:
                return _response(
                    "200 OK",
                    f'{_XML_HEAD}<LocationConstraint xmlns="{_NS}"/>'.encode(),
                )
            if head:
                return _response("200 OK", b"")
            if method == "GET":
                if q.get("list-type") != "2":
                    return _error(
                        "501 Not Implemented", "NotImplemented", "only ListObjectsV2", path
                    )
                body = b.list_v2(q)
                if not body:
                    return _error(
                        "400 Bad Request", "InvalidArgument", "bad continuation token", path
                    )
                return _response("200 OK", body)
            return _error("405 Method Not Allowed", "MethodNotAllowed", method, path)
        obj = b.bodies.get(key)
        if method not in ("GET", "HEAD"):
            return _error("405 Method Not Allowed", "MethodNotAllowed", method, path)
        if obj is None:
            return _error(
                "404 Not Found", "NoSuchKey", "The specified key does not exist.", key, head
            )
        if head:
            return obj.head_head
        if rng and rng.startswith("bytes="):
            return self._range(obj, rng[6:], key)
        return (obj.get_head, obj.data)

    def _range(self, obj: Body, spec: str, key: str) -> bytes:
        size = len(obj.data)
        first, _, last = spec.partition("-")
        try:
            if first == "":
                start, end = max(0, size - int(last)), size - 1
            else:
                start = int(first)
                end = min(size - 1, int(last)) if last else size - 1
        except ValueError:
            start, end = 0, size - 1
        if start >= size or start > end:
            return _error("416 Requested Range Not Satisfiable", "InvalidRange", spec, key)
        data = obj.data[start : end + 1]
        head = (
            f"HTTP/1.1 206 Partial Content\r\nx-amz-request-id: BENCH0000000000\r\n"
            f'Last-Modified: {LAST_MODIFIED_HTTP}\r\nETag: "{obj.etag}"\r\n'
            f"Accept-Ranges: bytes\r\nContent-Range: bytes {start}-{end}/{size}\r\n"
            f"Content-Type: {_content_type(key)}\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        return head + data


async def serve(spec_path: str, latency_ms: float, port: int, max_seconds: float) -> None:
    spec = pickle.loads(await asyncio.to_thread(Path(spec_path).read_bytes))
    bucket = Bucket(spec["bucket"], spec["objects"], spec.get("virtual", []))
    del spec
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: S3Protocol(bucket, latency_ms / 1000.0), "127.0.0.1", port, backlog=1024
    )
    chosen = server.sockets[0].getsockname()[1]
    print(f"PORT {chosen}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:  # the parent closes our stdin (or dies): stop
        with contextlib.suppress(Exception):
            sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    if not sys.stdin.isatty():
        loop.run_in_executor(None, watch_stdin)
    try:
        await asyncio.wait_for(stop.wait(), max_seconds)
    except asyncio.TimeoutError:
        print("max-seconds reached, stopping", file=sys.stderr)
    server.close()
    os._exit(0)  # the stdin watcher thread cannot be joined


# ------------------------------------------------------------------------------ loadgen
async def loadgen(urls: list[str], concurrency: int, seconds: float, max_requests: int) -> dict:
    """GET ``urls`` round-robin with ``concurrency`` in flight; bounded in time and count."""
    import aiohttp

    base = urls[0].split("/", 3)
    stats_url = f"{base[0]}//{base[2]}/__stats"
    done = 0
    nbytes = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(stats_url) as r:
            before = await r.json()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()

        async def worker(w: int) -> None:
            nonlocal done, nbytes
            i = w
            while time.monotonic() < deadline and done < max_requests:
                async with session.get(urls[i % len(urls)]) as r:
                    nbytes += len(await r.read())
                done += 1
                i += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        async with session.get(stats_url) as r:
            after = await r.json()
    server_requests = after["requests"] - before["requests"] - 1
    server_cpu = after["cpu"] - before["cpu"]
    return {
        "requests": done,
        "seconds": elapsed,
        "gets_per_s": done / elapsed,
        "mean_bytes": nbytes / max(1, done),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_get": 1e6 * server_cpu / max(1, server_requests),
        "server_capacity_gets_per_s_per_core": server_requests / server_cpu if server_cpu else 0,
        "loadgen_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--spec", required=True)
    s.add_argument("--latency-ms", type=float, default=0.0)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--max-seconds", type=float, default=1800.0)
    g = sub.add_parser("loadgen")
    g.add_argument("--url", action="append", required=True)
    g.add_argument("--concurrency", type=int, default=64)
    g.add_argument("--seconds", type=float, default=5.0)
    g.add_argument("--max-requests", type=int, default=200_000)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(serve(args.spec, args.latency_ms, args.port, args.max_seconds))
    else:
        result = asyncio.run(loadgen(args.url, args.concurrency, args.seconds, args.max_requests))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
