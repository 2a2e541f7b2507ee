"""Processes of a benchmark run: the endpoint, one workload per process, their rusage.

Every measured client runs in a process of its own (``run_process``): its CPU and peak RSS
come from ``wait4``'s rusage (threads and waited-for children included). This process stays
small on purpose: a child started with ``vfork`` inherits the parent's RSS high-water mark in
``ru_maxrss``, so the bucket is built in a child too (``build_bucket``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PY = sys.executable
#: Child processes started by this run; ``stop_children`` ends those still running.
CHILDREN: list[subprocess.Popen[bytes]] = []


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: fake credentials, no AWS config files, no metadata
    service. ``PYTHONPATH`` is kept (``PYTHONPATH=src python benchmarks/run.py`` measures
    that source tree); ``extra`` overrides (the reference client sets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KL3M_"))}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="AKIABENCHMARK0000000",
        AWS_SECRET_ACCESS_KEY="benchmark/secret/key/not/a/real/one/00000",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if extra:
        env.update(extra)
    return env


def stop_children() -> list[int]:
    """Kill the children still running; returns their pids."""
    left = [p for p in CHILDREN if p.poll() is None]
    for p in left:
        p.kill()
        with contextlib.suppress(Exception):
            p.wait(5)
    return [p.pid for p in left]


class Endpoint:
    """The local S3 endpoint (``s3_endpoint.py serve``) in its own process."""

    def __init__(self, spec: Path, latency_ms: float, max_seconds: float) -> None:
        cmd = [PY, str(HERE / "s3_endpoint.py"), "serve", "--spec", str(spec)]
        cmd += ["--latency-ms", str(latency_ms), "--max-seconds", str(max_seconds)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env()
        )
        CHILDREN.append(self.proc)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"endpoint did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.latency_ms = latency_ms

    def stop(self) -> None:
        p = self.proc
        if p.poll() is None:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.close()
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass
class Proc:
    """A finished child: exit code, output, wall seconds, CPU seconds, peak RSS (KiB)."""

    returncode: int
    stdout: str
    stderr: str
    wall: float
    cpu: float
    rss_kb: int

    def tail(self) -> str:
        """The last lines of its output, for an error note."""
        lines = (self.stderr or self.stdout).strip().splitlines()[-3:]
        return f"exit {self.returncode}: " + " | ".join(lines)[-300:]


def run_process(args: list[str], env: dict[str, str], timeout: float) -> Proc:
    """Run ``python ARGS``; killed after ``timeout`` seconds. CPU and RSS from wait4."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([PY, *args], stdout=out, stderr=err, env=env)
        CHILDREN.append(p)
        deadline = t0 + timeout
        while True:
            pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() > deadline:
                p.kill()
                _, status, rusage = os.wait4(p.pid, 0)
                p.returncode = -9
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Proc(
        returncode=p.returncode,
        stdout=stdout,
        stderr=stderr,
        wall=wall,
        cpu=rusage.ru_utime + rusage.ru_stime,
        rss_kb=rusage.ru_maxrss,
    )


def run_child(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a workload (``workloads.py``): its ``RESULT`` line plus the process's rusage."""
    proc = run_process(args, env, timeout)
    result: dict[str, Any] = {"process_wall": proc.wall}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[7:]))
    if "docs" not in result:
        result["error"] = proc.tail()
    result["process_cpu"] = proc.cpu
    result["process_rss_kb"] = proc.rss_kb
    return result


def build_bucket(
    n_docs: int, seed: int, virtual: list[int], cache: Path | None
) -> tuple[Path, dict[str, Any]]:
    """The bench bucket's spec file and facts (``bucket.py`` in a child; cached)."""
    args = [PY, str(HERE / "bucket.py"), str(n_docs), str(seed), *map(str, virtual)]
    env = child_env({"BENCH_CACHE": str(cache)} if cache else None)
    r = subprocess.run(args, capture_output=True, env=env, timeout=600, check=False)
    if r.returncode:
        raise SystemExit(f"building the bucket failed: {r.stderr.decode()[-2000:]}")
    spec_file, facts_json = r.stdout.decode().strip().splitlines()[-1].split("\t", 1)
    return Path(spec_file), json.loads(facts_json)


def capacity(endpoint: Endpoint, bucket: str, seconds: float) -> dict[str, Any]:
    """GETs/s the endpoint serves to an aiohttp load generator (its own process), 64 in
    flight over 64 of the bench objects, and the endpoint's CPU per GET."""
    import re
    import urllib.request
    from html import unescape
    from urllib.parse import quote

    listing = f"{endpoint.url}/{bucket}?list-type=2&prefix=documents/bench/&max-keys=64"
    with urllib.request.urlopen(listing, timeout=10) as resp:
        xml = resp.read().decode()
    keys = [unescape(k) for k in re.findall(r"<Key>(.*?)</Key>", xml)]
    args = [str(HERE / "s3_endpoint.py"), "loadgen", "--concurrency", "64"]
    args += ["--seconds", str(seconds)]
    for k in keys:
        args += ["--url", f"{endpoint.url}/{bucket}/{quote(k, safe='/')}"]
    r = subprocess.run([PY, *args], capture_output=True, env=child_env(), timeout=seconds + 60)
    try:
        result: dict[str, Any] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": r.stderr.decode()[-300:]}
    return result


def startup_times(repeat: int, cli: list[str]) -> dict[str, float]:
    """Best-of-``repeat`` wall seconds of an empty interpreter, the import and the CLI."""

    def best(cmd: list[str]) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=child_env(), timeout=60, check=False)
            times.append(time.perf_counter() - t0)
        return min(times)

    return {
        "python -c pass": best([PY, "-c", "pass"]),
        "import kl3m_data_client": best([PY, "-c", "import kl3m_data_client"]),
        "kl3m-client --help": best([PY, *cli, "--help"]),
    }
