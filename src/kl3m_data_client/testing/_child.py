"""The moto server child process: spawned, spoken to in JSON lines, stopped and reaped.

``python -m kl3m_data_client.testing._launcher`` answers one JSON message per line on its
stdout for each command written to its stdin (see ``_launcher``). Nothing here runs at
import: the spawner thread and the exit hook are created by the first :meth:`start`.
"""

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
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

_SRC_ROOT: Final = str(Path(__file__).resolve().parents[2])
#: Children still running; those left at interpreter exit are stopped then.
_LIVE: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


class ServerError(RuntimeError):
    """The local S3 server failed to start or to execute a command."""


def _close_all() -> None:
    for child in list(_LIVE):
        child.close()


@functools.cache
def _spawner() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread every child is spawned from (created on first use, with the exit hook).

    PR_SET_DEATHSIG fires when the *thread* that forked the child exits, not the process:
    a server started from a short-lived worker thread (e.g. ``anyio.to_thread``) must not
    be killed when that thread retires.
    """
    atexit.register(_close_all)
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kl3m-spawn")


def _command_line(host: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kl3m_data_client.testing._launcher",
        "--host",
        host,
        "--parent-pid",
        str(os.getpid()),
    ]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_ROOT, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ServerProcess:
    """One running child (not thread-safe: its owner serialises the calls)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        spawn: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen
        try:
            self._proc: subprocess.Popen[bytes] | None = (
                _spawner()
                .submit(
                    spawn,
                    _command_line(host),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=self._stderr,
                    env=_environment(),
                    close_fds=True,
                    # own process group: a Ctrl-C (SIGINT to the foreground group) or a
                    # test signalling its group must not kill the server under a session
                    start_new_session=True,
                )
                .result()
            )
        except BaseException:
            self._stderr.close()
            raise
        _LIVE.add(self)
        self._buffer = b""
        self._ids = itertools.count(1)
        self.port = 0

    @classmethod
    def start(cls, host: str, timeout: float) -> ServerProcess:
        """Spawn a child and wait until it answers HTTP (stopped again if it does not)."""
        child = cls(host)
        try:
            deadline = time.monotonic() + timeout
            ready = child._read_message(deadline)
            if ready.get("event") != "ready":
                raise ServerError(f"unexpected first message from server: {ready!r}")
            child.port = int(ready["port"])
            child.wait_http(deadline)
        except BaseException:
            child.close()
            raise
        return child

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        return self._require_proc().pid

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ServerError("server is not running; call start() or use 'with'")
        return self._proc

    def command(self, cmd: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Send one command; its successful reply (else :class:`ServerError`)."""
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

    def wait_http(self, deadline: float) -> None:
        """Poll ``GET /`` until the server answers (or ``deadline`` passes)."""
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
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 4000))
            tail = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"\n--- server stderr (tail) ---\n{tail}" if tail else ""

    def close(self) -> None:
        """Ask the child to shut down, wait for it (terminate, then kill); idempotent."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            _stop(proc)
        self._stderr.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
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
