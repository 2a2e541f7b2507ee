"""Crash safety of the export: real SIGKILL / SIGINT of a subprocess, then resume.

Each child process runs an export and, through a hook, SIGKILLs itself at an exact moment
(before/after a rename of a part or of the manifest, after a batch of a part was written),
or is killed from outside. Rerunning the same export must finish it, and the destination must
then be byte-identical to a clean run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import KL3MClient

CHILD = r"""
import asyncio, json, os, signal, sys, time

signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

args = json.loads(sys.argv[1])
hook = args.pop("hook", None)
slow_everywhere = args.pop("slow_everywhere", 0)
if __name__ == "__mp_main__":  # a spawned export worker: it is only slowed down
    hook = ["slow", "", slow_everywhere] if slow_everywhere else None
kw = args.pop("client")
dest = args.pop("dest")
calls = {"replace": 0, "batch": 0}

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if hook:
    kind, when, n = hook
    if kind == "replace":
        real_replace = os.replace
        def replace(src, dst, *a, **k):
            calls["replace"] += 1
            if calls["replace"] == n and when == "before":
                die()
            real_replace(src, dst, *a, **k)
            if calls["replace"] == n and when == "after":
                die()
        os.replace = replace
    elif kind == "batch":
        from kl3m_data_client.export import _writers
        for cls in (_writers.JsonlWriter, _writers.ParquetWriter):
            def make(real):
                def write_batch(self, batch):
                    real(self, batch)
                    calls["batch"] += 1
                    if calls["batch"] == n:
                        self.sink.flush()
                        die()
                return write_batch
            cls.write_batch = make(cls.write_batch)
    if kind == "slowkill":  # slow GETs, and SIGKILL after the n-th os.replace
        kind, when = "slow", None
        real_replace = os.replace
        def replace(src, dst, *a, **k):
            calls["replace"] += 1
            real_replace(src, dst, *a, **k)
            if calls["replace"] == hook[2]:
                die()
        os.replace = replace
        n = hook[1]
    if kind == "slow":
        from kl3m_data_client._store import S3Store
        real_get = S3Store.get
        async def get(self, key, **options):
            await asyncio.sleep(n)
            return await real_get(self, key, **options)
        S3Store.get = get

from kl3m_data_client import AsyncKL3MClient, Limits

async def main():
    async with AsyncKL3MClient(**kw, limits=Limits(max_inflated_bytes=64 << 20)) as client:
        report = await client.export(args.pop("dataset"), dest, **args)
    print(json.dumps(report.as_dict()))

if __name__ == "__main__":
    asyncio.run(main())
"""

pytestmark = pytest.mark.kl3m_corpus(n_documents=100)

BAD = {
    "representations/usc/a-first-bad.json": b"{not json",
    "representations/usc/title-10/zz-bad.json": b'{"documents": 3}',
    "representations/usc/title-30/zz-bad.json": b"",
}


def _files(dest: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(dest.rglob("*")):
        if path.is_file() and path.name not in (".export.lock", ".manifest.lock", ".workers.lock"):
            out[str(path.relative_to(dest))] = path.read_bytes()
    return out


def _run_child(
    script: Path, options: dict[str, Any], hook: Any = None, *, wait: bool = True
) -> subprocess.Popen[bytes]:
    payload = json.dumps({**options, "hook": hook})
    env = dict(os.environ, PYTHONWARNINGS="error")
    proc = subprocess.Popen(
        [sys.executable, str(script), payload],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    if wait:
        proc.out, proc.err = proc.communicate(timeout=120)  # type: ignore[attr-defined]
    return proc


@pytest.fixture
def setup(kl3m_bucket: Any, tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, bytes]]:
    """The child script, the export options and the files of a clean run."""
    kl3m_bucket.put_objects(BAD)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return script, kl3m_bucket.client_kwargs(), {}


def _clean(kwargs: dict[str, Any], dest: Path, options: dict[str, Any]) -> dict[str, bytes]:
    from kl3m_data_client import Limits

    with KL3MClient(**kwargs, limits=Limits(max_inflated_bytes=64 << 20)) as client:
        report = client.export(options["dataset"], dest, **_export_options(options))
    assert report.errors == 3 and report.exported > 10 and len(report.parts) >= 5
    return _files(dest)


def _export_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in ("dataset", "client", "dest")}


CHAINS = {
    "jsonl-gzip": (
        {"stage": "representations", "format": "jsonl", "compression": "gzip"},
        [
            ("replace", "before", 1),  # before the first manifest exists
            ("replace", "after", 2),  # part 0 renamed, manifest not updated
            ("replace", "before", 3),  # manifest tmp written, not renamed
            ("batch", "", 2),  # in the middle of a part
            ("replace", "after", 5),  # right after a manifest update
            ("replace", "after", 7),  # likely the final checkpoint / finalize
        ],
    ),
    "parquet": (
        {"stage": "representations", "format": "parquet", "content": "text"},
        [
            ("replace", "after", 4),
            ("batch", "", 1),
            ("replace", "before", 4),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_sigkill_at_many_points_then_resume_is_byte_identical(
    setup: Any, tmp_path: Path, name: str
) -> None:
    script, kwargs, _ = setup
    fmt_options, points = CHAINS[name]
    options = {"dataset": "usc", "records_per_part": 4, **fmt_options}
    clean = _clean(kwargs, tmp_path / "clean", options)
    dest = tmp_path / "crashed"
    child_options = {**options, "client": kwargs, "dest": str(dest)}
    killed = 0
    for hook in points:
        proc = _run_child(script, child_options, list(hook))
        if proc.returncode == -signal.SIGKILL:
            killed += 1
        else:  # the export finished before reaching this point
            assert proc.returncode == 0, proc.err.decode()  # type: ignore[attr-defined]
            break
    assert killed >= 3
    proc = _run_child(script, child_options)
    assert proc.returncode == 0, proc.err.decode()  # type: ignore[attr-defined]
    report = json.loads(proc.out)  # type: ignore[attr-defined]
    assert report["resumed"]
    assert _files(dest) == clean
    assert not [p for p in dest.rglob("*.tmp")]


def test_external_sigkill_and_ctrl_c_leave_resumable_state(setup: Any, tmp_path: Path) -> None:
    script, kwargs, _ = setup
    options = {
        "dataset": "usc",
        "records_per_part": 2,
        "stage": "parquet",
        "format": "jsonl",
        "compression": "zstd",
        "max_concurrency": 2,
    }
    clean = _clean_parquet(kwargs, tmp_path / "clean", options)
    dest = tmp_path / "stopped"
    child_options = {**options, "client": kwargs, "dest": str(dest)}
    for sig in (signal.SIGKILL, signal.SIGINT):
        # slow GETs (2 in flight, 0.2 s each): a part every ~0.2 s, the signal lands mid-run
        proc = _run_child(script, child_options, ["slow", "", 0.2], wait=False)
        manifest = dest / "manifest.json"
        deadline = time.monotonic() + 60
        parts_before = len(list((dest / "data").glob("part-*"))) if dest.exists() else 0
        while time.monotonic() < deadline:
            if manifest.exists() and len(list((dest / "data").glob("part-*"))) > parts_before:
                break
            time.sleep(0.02)
        time.sleep(0.1)
        assert proc.poll() is None, "the export finished too early"
        stopped_at = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - stopped_at < 5
        assert proc.returncode != 0
        if sig == signal.SIGINT:
            assert b"KeyboardInterrupt" in err
        json.loads(manifest.read_text())  # always a valid manifest
    proc = _run_child(script, child_options)
    assert proc.returncode == 0, proc.err.decode()  # type: ignore[attr-defined]
    assert _files(dest) == clean


def _clean_parquet(kwargs: dict[str, Any], dest: Path, options: dict[str, Any]) -> dict[str, bytes]:
    from kl3m_data_client import Limits

    with KL3MClient(**kwargs, limits=Limits(max_inflated_bytes=64 << 20)) as client:
        report = client.export(options["dataset"], dest, **_export_options(options))
    assert report.exported > 10 and len(report.parts) >= 5
    return _files(dest)


def test_killed_exporter_with_workers_then_resume_is_byte_identical(
    setup: Any, tmp_path: Path
) -> None:
    """SIGKILL of the exporting process: its spawned worker stops by itself, the rerun waits
    for it, then resumes both streams (at different checkpoints) from one listing."""
    import fcntl

    script, kwargs, _ = setup
    options = {
        "dataset": "usc",
        "records_per_part": 3,
        "stage": "representations",
        "format": "jsonl",
        "workers": 2,
        "max_concurrency": 1,
    }
    clean = _clean(kwargs, tmp_path / "clean", options)
    dest = tmp_path / "crashed"
    child_options = {**options, "client": kwargs, "dest": str(dest)}
    for _ in range(2):
        # slow GETs (the worker's stream takes seconds); the exporter dies after 2 parts
        slowed = {**child_options, "slow_everywhere": 0.3}
        proc = _run_child(script, slowed, ["slowkill", 0.3, 5])
        assert proc.returncode == -signal.SIGKILL, proc.err.decode()  # type: ignore[attr-defined]
        # the orphaned worker notices and stops (releasing the workers lock)
        deadline = time.monotonic() + 15
        fd = os.open(dest / ".workers.lock", os.O_RDWR)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the orphaned worker did not stop"
                    time.sleep(0.05)
        finally:
            os.close(fd)
        # ... and stopped where it was: it did not go on to finish its stream alone
        manifest = json.loads((dest / "manifest.json").read_text())
        assert not manifest["streams"].get("w1", {}).get("complete")
    assert set(manifest["streams"]) == {"w0", "w1"}
    proc = _run_child(script, child_options)
    assert proc.returncode == 0, proc.err.decode()  # type: ignore[attr-defined]
    assert json.loads(proc.out)["resumed"]  # type: ignore[attr-defined]
    assert _files(dest) == clean
