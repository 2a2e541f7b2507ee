"""What every workload process shares: the fake credentials, the measured window (wall and
CPU time, rusage of this process and its waited-for children), the peers' decode, the peak
RSS, and how our client and an obstore store are configured."""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import sys
import time
import zlib
from typing import Any

BUCKET = "data.kl3m.ai"
KEY_ID = "AKIABENCHMARK0000000"
SECRET = "benchmark/secret/key/not/a/real/one/00000"
REGION = "us-east-1"


def _cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _children_cpu() -> float:
    """The share of :func:`_cpu` spent in waited-for child processes (export workers)."""
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def _sys_cpu() -> float:
    """The kernel's share of :func:`_cpu` (syscalls: sockets, file writes, fsync)."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_stime + c.ru_stime


def decode(body: bytes) -> int:
    """What every peer does with a documents-stage object: JSON, base64, zlib."""
    obj = json.loads(body)
    return len(zlib.decompress(base64.b64decode(obj["content"])))


def peak_rss_kb() -> int:
    """VmHWM of this process (reset at exec, unlike ru_maxrss which keeps the peak of the
    forked parent's memory image)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Window:
    """Wall and CPU time of the measured part."""

    def __enter__(self) -> Window:
        self.t0, self.c0, self.s0 = time.perf_counter(), _cpu(), _sys_cpu()
        self.k0 = _children_cpu()
        self.profiler = None
        if os.environ.get("BENCH_CPROFILE"):
            # benchmarks/profile.py would shadow the stdlib ``profile`` that cProfile imports
            here = os.path.dirname(os.path.abspath(__file__))
            saved, sys.path[:] = list(sys.path), [p for p in sys.path if p not in ("", here)]
            sys.modules.pop("profile", None)
            try:
                import cProfile
            finally:
                sys.path[:] = saved

            self.profiler = cProfile.Profile()
            self.profiler.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(os.environ["BENCH_CPROFILE"])
        self.seconds = time.perf_counter() - self.t0
        self.cpu = _cpu() - self.c0
        self.sys_cpu = _sys_cpu() - self.s0
        self.children_cpu = _children_cpu() - self.k0


def obstore_store(a: argparse.Namespace) -> Any:
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=a.endpoint,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        region=REGION,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "pool_max_idle_per_host": str(a.concurrency)},
    )


def ours_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bucket": BUCKET,
        "endpoint_url": a.endpoint,
        "region": REGION,
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET,
        "max_concurrency": a.concurrency,
    }
    if a.memory_budget:  # benchmarks/budget.py: only passed to a client that has the option
        kwargs["memory_budget"] = a.memory_budget
    if a.data_plane:  # run.py passes it only when this build accepts it (_peers.probe_ours)
        kwargs["data_plane"] = a.data_plane
    return kwargs
