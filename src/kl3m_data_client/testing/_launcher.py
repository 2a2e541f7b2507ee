"""Child process behind :class:`~kl3m_data_client.testing.LocalS3Server` (internal).

``python -m kl3m_data_client.testing._launcher --host 127.0.0.1 --parent-pid PID``

* binds moto's S3 server (werkzeug, threaded) to a free loopback port (port 0);
* writes ``{"event": "ready", "port": N, "pid": P}`` as one JSON line on stdout;
* then serves JSON-line commands read from stdin, answering on stdout:
  ``create_bucket`` (optionally generating a corpus *inside this process* and loading it
  straight into moto's in-memory backend, which is ~100x faster than HTTP PUTs),
  ``delete_bucket``, ``ping``, ``stop_http`` (close the listening socket and every open
  connection: an outage; the data stays in memory), ``start_http`` (listen again on the same
  port), ``schedule_outage`` (stop after N more requests; optionally reset K connection
  attempts, then serve again), ``http_status``, ``shutdown``;
* exits when stdin reaches EOF, on ``shutdown``, or (Linux) when its parent dies
  (``prctl(PR_SET_DEATHSIG, SIGKILL)``).

Everything else (moto, werkzeug logging) goes to stderr; stdout is reserved for the protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
from typing import Any, TextIO

PR_SET_DEATHSIG = 1


def set_parent_death_signal(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit if it already has."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_DEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if parent_pid and os.getppid() != parent_pid:
        # the parent died before prctl took effect (we were re-parented)
        os._exit(0)


class _Backend:
    def __init__(self) -> None:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        self._backend: Any = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    def create_bucket(self, bucket: str, objects: dict[str, bytes]) -> None:
        self._backend.create_bucket(bucket, "us-east-1")
        for key, value in objects.items():
            self._backend.put_object(bucket, key, value, disable_notification=True)

    def delete_bucket(self, bucket: str) -> None:
        b = self._backend.get_bucket(bucket)
        for key in list(b.keys.values()):
            dispose = getattr(key, "dispose", None)
            if dispose is not None:
                dispose()
        b.keys.clear()
        self._backend.delete_bucket(bucket)


class _Then:
    """A WSGI response body that calls ``then`` once it has been sent (on ``close``)."""

    def __init__(self, body: Any, then: Any) -> None:
        self.body = body
        self.then = then

    def __iter__(self) -> Any:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.then()


class _Frontend:
    """moto's WSGI app behind a threaded werkzeug server that can stop and listen again on
    the same port; stopping also cuts the keep-alive connections it is serving.

    An outage can be scheduled: after ``after`` more requests the server stops; with
    ``reject`` set, the port then resets that many connection attempts (the clients see
    connection errors) and the server comes back by itself; else it stays down until
    ``start_http``.
    """

    def __init__(self, host: str, port: int) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.host = host
        self.port = port
        self.app = DomainDispatcherApplication(create_backend_app)
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()  # guards connections and the counters below
        self.control = threading.Lock()  # one start / stop at a time
        self.requests = 0
        #: (at request count, reject, query substring)
        self.armed: tuple[int, int | None, str | None] | None = None
        self.outages = 0
        self.rejected = 0
        self.rejecter: socket.socket | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        with self.lock:
            self.requests += 1
            armed = self.armed
            fire = (
                armed is not None
                and self.requests >= armed[0]
                and (armed[2] is None or armed[2] in environ.get("QUERY_STRING", ""))
            )
            if fire:
                self.armed = None
        if not fire or armed is None:
            return self.app(environ, start_response)
        if armed[2] is not None:  # this very request is not answered: its connection is cut
            self._outage(armed[1])
            return self.app(environ, start_response)
        # this request is answered; the outage starts once its body is sent
        return _Then(self.app(environ, start_response), lambda: self._outage(armed[1]))

    def schedule_outage(self, after: int, reject: int | None, query: str | None) -> None:
        with self.lock:
            self.armed = (self.requests + max(1, after), reject, query)

    def _outage(self, reject: int | None) -> None:
        with self.control:
            self._stop()
            self.outages += 1
            if reject is None:
                return
            sock = socket.create_server((self.host, self.port))
            self.rejecter = sock
        threading.Thread(target=self._reject, args=(sock, reject), daemon=True).start()

    def _reject(self, sock: socket.socket, reject: int) -> None:
        try:
            for _ in range(reject):
                try:
                    conn, _addr = sock.accept()
                except OSError:  # closed by start_http
                    return
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # a reset
                with self.lock:
                    self.rejected += 1
        finally:
            with self.control:
                if self.rejecter is sock:
                    self.rejecter = None
                    sock.close()
                    self._start()

    def start(self) -> int:
        with self.control:
            if self.rejecter is not None:
                self.rejecter.close()
                self.rejecter = None
            return self._start()

    def _start(self) -> int:
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        if self.server is not None:
            return self.port
        frontend = self

        class Handler(MotoRequestHandler):
            def setup(self) -> None:
                super().setup()
                with frontend.lock:
                    frontend.connections.add(self.connection)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with frontend.lock:
                        frontend.connections.discard(self.connection)

        self.server = make_server(self.host, self.port, self, True, request_handler=Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.port

    def stop(self) -> None:
        with self.control:
            self._stop()

    def _stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self.thread is not None:
            self.thread.join()

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "serving": self.server is not None,
                "requests": self.requests,
                "outages": self.outages,
                "rejected": self.rejected,
                "armed": self.armed is not None,
            }


def _handle(
    backend: _Backend, cmd: dict[str, Any], frontend: _Frontend | None = None
) -> dict[str, Any]:
    op = cmd.get("op")
    if op == "ping":
        return {}
    if op == "stop_http" and frontend is not None:
        frontend.stop()
        return {}
    if op == "start_http" and frontend is not None:
        return {"port": frontend.start()}
    if op == "schedule_outage" and frontend is not None:
        reject = cmd.get("reject")
        query = cmd.get("query")
        frontend.schedule_outage(
            int(cmd["after"]),
            None if reject is None else int(reject),
            None if query is None else str(query),
        )
        return {}
    if op == "http_status" and frontend is not None:
        return frontend.status()
    if op == "create_bucket":
        objects: dict[str, bytes] = {}
        n = int(cmd.get("n_documents", 0))
        dirty = bool(cmd.get("dirty", False))
        if n or dirty:
            from kl3m_data_client.testing._corpus import generate_corpus

            corpus = generate_corpus(n, seed=int(cmd.get("seed", 0)), dirty=dirty)
            objects = corpus.objects
        backend.create_bucket(str(cmd["bucket"]), objects)
        return {"objects": len(objects), "bytes": sum(len(v) for v in objects.values())}
    if op == "delete_bucket":
        backend.delete_bucket(str(cmd["bucket"]))
        return {}
    raise ValueError(f"unknown op: {op!r}")


def _send(out: TextIO, lock: threading.Lock, message: dict[str, Any]) -> None:
    with lock:
        out.write(json.dumps(message) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kl3m_data_client.testing._launcher")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)

    set_parent_death_signal(args.parent_pid)
    # the parent decides when we stop (close(), stdin EOF, or its death), not a Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # Keep the protocol channel private: fd 1 now points at stderr for anything else.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    lock = threading.Lock()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    frontend = _Frontend(args.host, args.port)
    port = frontend.start()
    backend = _Backend()
    _send(proto, lock, {"event": "ready", "port": port, "pid": os.getpid()})

    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            if cmd.get("op") == "shutdown":
                _send(proto, lock, {"id": cmd.get("id"), "ok": True})
                break
            try:
                result = _handle(backend, cmd, frontend)
            except Exception as exc:
                _send(proto, lock, {"id": cmd.get("id"), "ok": False, "error": repr(exc)})
            else:
                _send(proto, lock, {"id": cmd.get("id"), "ok": True, **result})
    finally:
        # moto keeps everything in memory: nothing to flush, leave without thread joins
        proto.flush()
        os._exit(0)
    return 0  # pragma: no cover


if __name__ == "__main__":
    raise SystemExit(main())
