"""Export under failure, against a real local S3 server over real HTTP.

Outages are driven by the server itself (``LocalS3Server.schedule_outage``): after N
requests it stops serving (listening socket closed, open connections cut) and either comes
back after resetting K connection attempts (a short outage) or stays down until the test
restarts it on the same port (a long one). Every export under an outage must end, once
rerun if it had to stop, with exactly the files of a clean run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import (
    AsyncKL3MClient,
    ConnectionFailedError,
    CorruptObjectError,
    KL3MError,
    NotFoundError,
)
from kl3m_data_client.export import ExportReport, ExportStoppedError
from kl3m_data_client.testing import LocalS3Server
from kl3m_data_client.testing._corpus import encode_document_object

pytestmark = pytest.mark.anyio

DATASET = "usc"
#: Export options of every run here (small parts: a stop falls between parts).
OPTIONS: dict[str, Any] = {
    "stage": "representations",
    "format": "jsonl",
    "records_per_part": 10,
    "max_concurrency": 8,
}
#: Requests served before a scheduled outage starts (an export here makes ~120).
OUTAGE_AFTER = 40


@pytest.fixture(scope="module")
def server() -> Iterator[LocalS3Server]:
    """A server of this module only: its outages must not hit other tests."""
    with LocalS3Server() as srv:
        yield srv


@pytest.fixture(scope="module")
def bucket(server: LocalS3Server) -> Any:
    return server.create_bucket(n_documents=400, seed=3)


def client_kwargs(bucket: Any) -> dict[str, Any]:
    # one attempt per request: botocore does not hide the outage, the export must ride it
    return {**bucket.client_kwargs(), "max_attempts": 1, "connect_timeout": 2.0}


def snapshot(dest: Path) -> dict[str, Any]:
    """Every byte an export leaves that must not depend on how the run went."""
    files = {}
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and not path.name.startswith(".") and path.name != "manifest.json":
            files[rel] = path.read_bytes()
    manifests = {}
    for path in sorted(dest.rglob("manifest.json")):
        m = json.loads(path.read_text())
        streams = m.get("streams") or {}
        manifests[path.relative_to(dest).as_posix()] = {
            "complete": m["complete"],
            "streams": {
                name: {
                    "parts": [(p["path"], p["records"], p["sha256"]) for p in e.get("parts", [])],
                    "counters": (e.get("final") or {}).get("counters"),
                }
                for name, e in streams.items()
            },
            "shards": {
                name: {"counters": e["counters"], "parts": [p["path"] for p in e["parts"]]}
                for name, e in (m.get("shards") or {}).items()
            },
        }
    return {"files": files, "manifests": manifests}


def assert_like_clean(dest: Path, clean: Path, report: ExportReport) -> None:
    assert report.errors == 0 and not report.partial
    got, want = snapshot(dest), snapshot(clean)
    assert sorted(got["files"]) == sorted(want["files"])
    for name, data in want["files"].items():
        assert got["files"][name] == data, name
    assert got["manifests"] == want["manifests"]
    assert (dest / "errors.jsonl").read_bytes() == b""


async def export(bucket: Any, dest: Path, **extra: Any) -> ExportReport:
    async with AsyncKL3MClient(**client_kwargs(bucket)) as client:
        return await client.export(DATASET, dest, **OPTIONS, **extra)


@pytest.fixture(scope="module")
def clean(bucket: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clean runs (no outage) of each configuration."""
    import anyio

    out = {}
    for name, extra in (("single", {}), ("workers", {"workers": 2})):
        dest = tmp_path_factory.mktemp(f"clean-{name}")
        report = anyio.run(lambda d=dest, e=extra: export(bucket, d, **e))
        assert report.exported == len(bucket.corpus.in_stage("representations", DATASET))
        out[name] = dest
    return out


def outage_hit(server: LocalS3Server, before: dict[str, Any], *, rejected: int) -> None:
    now = server.http_status()
    assert now["outages"] == before["outages"] + 1 and not now["armed"]
    assert now["rejected"] - before["rejected"] == rejected
    assert now["serving"]


# ------------------------------------------------------------------------------ outages
@pytest.mark.parametrize("config", ["single", "workers"])
async def test_short_outage_is_ridden_through(
    server: LocalS3Server,
    bucket: Any,
    clean: dict[str, Path],
    tmp_path: Path,
    config: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kl3m_data_client.export")
    before = server.http_status()
    server.schedule_outage(OUTAGE_AFTER, reject=12)
    extra = {"workers": 2} if config == "workers" else {}
    report = await export(bucket, tmp_path / "o", outage_timeout=120, **extra)
    outage_hit(server, before, rejected=12)
    assert_like_clean(tmp_path / "o", clean[config], report)
    if config == "single":  # worker 1 logs in its own process
        messages = [(r.levelno, r.getMessage()) for r in caplog.records]
        assert any(lv == logging.WARNING and "waits up to 120 s" in m for lv, m in messages)
        assert any(lv == logging.INFO and "answers again" in m for lv, m in messages)


@pytest.mark.parametrize("config", ["single", "workers"])
async def test_long_outage_stops_resumably_and_a_rerun_equals_a_clean_run(
    server: LocalS3Server, bucket: Any, clean: dict[str, Path], tmp_path: Path, config: str
) -> None:
    dest = tmp_path / "o"
    extra = {"workers": 2} if config == "workers" else {}
    before = server.http_status()
    server.schedule_outage(OUTAGE_AFTER)  # down until restarted
    try:
        with pytest.raises(ExportStoppedError) as info:
            await export(bucket, dest, outage_timeout=1.0, **extra)
    finally:
        server.restart_serving()
    outage_hit(server, before, rejected=0)
    stopped = info.value
    assert isinstance(stopped.last_error, ConnectionFailedError | KL3MError)
    assert not stopped.per_object and stopped.__cause__ is stopped.last_error
    assert "outage_timeout=1 s" in str(stopped) and "resume" in str(stopped)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert not manifest["complete"]
    # nothing was recorded as a per-document error
    assert all(p.read_bytes() == b"" for p in dest.glob("errors*.jsonl")), (
        "an outage became per-document errors"
    )
    report = await export(bucket, dest, outage_timeout=1.0, **extra)
    assert report.resumed
    assert_like_clean(dest, clean[config], report)


async def test_outage_during_a_multi_page_listing(
    server: LocalS3Server, bucket: Any, tmp_path: Path
) -> None:
    """The listing waits too, then continues after the last key it listed: no key is lost
    or repeated across the outage."""
    b = server.create_bucket()
    try:
        good = bucket.corpus.in_stage("representations", DATASET)[0]
        data = bucket.corpus.objects[good.representation_key]
        b.put_objects({f"representations/big/doc-{i:05d}.json": data for i in range(1050)})
        kwargs = client_kwargs(b)
        options = {"stage": "representations", "records_per_part": 500}
        async with AsyncKL3MClient(**kwargs) as client:
            clean = await client.export("big", tmp_path / "clean", **options)
            assert clean.exported == 1050
            before = server.http_status()
            # the first listing page is answered; the request of the second one starts the
            # outage: the listing (and the GETs) fail until 12 connection attempts were reset
            server.schedule_outage(1, reject=12, query="continuation-token")
            report = await client.export("big", tmp_path / "o", outage_timeout=120, **options)
        outage_hit(server, before, rejected=12)
        assert_like_clean(tmp_path / "o", tmp_path / "clean", report)
    finally:
        b.close()


async def test_ids_export_against_an_unreachable_endpoint_stops(
    bucket: Any, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kwargs = {**client_kwargs(bucket), "endpoint_url": f"http://127.0.0.1:{port}"}
    ids = [d.document_id for d in bucket.corpus.in_stage("representations", DATASET)[:5]]
    async with AsyncKL3MClient(**kwargs) as client:
        with pytest.raises(ExportStoppedError) as info:
            await client.export(DATASET, tmp_path / "o", ids=ids, outage_timeout=0.5, **OPTIONS)
    assert isinstance(info.value.last_error, ConnectionFailedError)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert not manifest["complete"]
    assert (tmp_path / "o" / "errors.jsonl").read_bytes() == b""


def test_cli_exit_4_when_stopped_by_an_outage_then_a_rerun_completes(
    bucket: Any, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ids = tmp_path / "ids.txt"
    docs = bucket.corpus.in_stage("representations", DATASET)[:6]
    ids.write_text("\n".join(d.document_id for d in docs) + "\n")
    dest = tmp_path / "o"

    def run(endpoint: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KL3M_"))}
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        cmd = [sys.executable, "-m", "kl3m_data_client.cli", "--quiet", "--endpoint-url", endpoint]
        cmd += ["--bucket", bucket.bucket, "--max-attempts", "1", "--connect-timeout", "2"]
        cmd += ["export", DATASET, str(dest), "--stage", "representations", "--ids", str(ids)]
        cmd += ["--outage-timeout", "0.5"]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    proc = run(f"http://127.0.0.1:{port}")
    assert proc.returncode == 4, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "ConnectionFailedError" in lines[0]
    assert "rerunning the same command resumes" in lines[0]
    proc = run(bucket.endpoint_url)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "errors.jsonl").read_bytes() == b""
    lines = (dest / "data" / "part-00000.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [d.document_id for d in docs]


# ------------------------------------------------------------------------------ errors
async def test_errors_keep_their_type_in_errors_jsonl_and_records_api(
    server: LocalS3Server, tmp_path: Path
) -> None:
    b = server.create_bucket(n_documents=30, seed=1)
    try:
        b.put_objects({"representations/usc/zz-bad.json": b"{not json"})
        ids = ["zz-bad", "no-such-doc", "../x"]
        async with AsyncKL3MClient(**b.client_kwargs()) as client:
            report = await client.export(DATASET, tmp_path / "o", stage="representations", ids=ids)
            assert report.errors == 3
            lines = [
                json.loads(x) for x in (tmp_path / "o" / "errors.jsonl").read_text().splitlines()
            ]
            assert [e["error"] for e in lines] == [
                "CorruptObjectError",
                "NotFoundError",
                "InvalidInputError",
            ]
            assert all(set(e) >= {"key", "stage", "reason", "error"} for e in lines)
            for doc_id, cls in (("zz-bad", CorruptObjectError), ("no-such-doc", NotFoundError)):
                with pytest.raises(cls) as info:
                    async for _ in client.iter_jsonl_export(
                        DATASET, "representations", ids=[doc_id]
                    ):
                        pass
                assert info.value.key == f"representations/usc/{doc_id}.json"
    finally:
        b.close()


async def test_retry_errors_recovers_a_fixed_document(
    server: LocalS3Server, tmp_path: Path
) -> None:
    b = server.create_bucket(n_documents=30, seed=1)
    try:
        good = b.corpus.in_stage("representations", DATASET)[0]
        good_bytes = b.corpus.objects[good.representation_key]
        key = "representations/usc/zz-fixed.json"
        b.put_objects({key: b"{not json"})
        dest = tmp_path / "o"
        async with AsyncKL3MClient(**b.client_kwargs()) as client:
            first = await client.export(DATASET, dest, stage="representations")
            assert first.errors == 1 and first.partial
            assert json.loads((dest / "errors.jsonl").read_text())["key"] == key
            again = await client.export(DATASET, dest, stage="representations")
            assert again.errors == 1  # a plain rerun of a finished export changes nothing
            b.put_objects({key: good_bytes})  # the object is fixed at the source
            fixed = await client.export(DATASET, dest, stage="representations", retry_errors=True)
            assert fixed.errors == 0 and not fixed.partial
            assert fixed.exported == first.exported + 1
            assert (dest / "errors.jsonl").read_bytes() == b""
            assert (dest / "errors-r1.jsonl").read_bytes() == b""
            retry_part = dest / "data" / "part-r1-00000.jsonl"
            assert [p.path for p in fixed.parts][-1] == str(retry_part)
            records = [json.loads(x) for x in retry_part.read_text().splitlines()]
            assert [r["id"] for r in records] == ["zz-fixed"]
            assert records[0]["tokens"]
            manifest = json.loads((dest / "manifest.json").read_text())
            assert manifest["complete"] and len(manifest["retries"]) == 1
            # nothing left to retry: another round changes nothing
            same = await client.export(DATASET, dest, stage="representations", retry_errors=True)
            assert same.exported == fixed.exported and same.errors == 0
            assert len(json.loads((dest / "manifest.json").read_text())["retries"]) == 1
    finally:
        b.close()


def test_cli_retry_errors(server: LocalS3Server, tmp_path: Path) -> None:
    b = server.create_bucket(n_documents=30, seed=1)
    try:
        good = b.corpus.in_stage("representations", DATASET)[0]
        key = "representations/usc/zz-fixed.json"
        b.put_objects({key: b"\x00 not json"})
        dest = tmp_path / "o"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KL3M_"))}
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        cmd = [sys.executable, "-m", "kl3m_data_client.cli", "--quiet", "--json"]
        cmd += ["--endpoint-url", b.endpoint_url, "--bucket", b.bucket]
        cmd += ["export", DATASET, str(dest), "--stage", "representations"]

        def run(*extra: str) -> tuple[int, dict[str, Any]]:
            proc = subprocess.run(
                [*cmd, *extra], capture_output=True, text=True, env=env, timeout=120
            )
            return proc.returncode, json.loads(proc.stdout or "{}")

        code, report = run()
        assert code == 3 and report["errors"] == 1
        b.put_objects({key: b.corpus.objects[good.representation_key]})
        code, fixed = run("--retry-errors")
        assert code == 0 and fixed["errors"] == 0
        assert fixed["exported"] == report["exported"] + 1
        assert (dest / "errors.jsonl").read_bytes() == b""
    finally:
        b.close()


# ------------------------------------------------------------------------------ records
def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"n": value} if i % 2 else [value]
    return value


def _nested_text(depth: int) -> str:
    """The JSON text of ``_nested(depth)``, built without a recursive encoder."""
    opening = "".join('{"n":' if i % 2 else "[" for i in reversed(range(depth)))
    closing = "".join("}" if i % 2 else "]" for i in range(depth))
    return opening + '"leaf"' + closing


def _deep_document(doc_id: str, depth: int) -> bytes:
    head = encode_document_object(
        {"identifier": doc_id, "title": "deep", "format": "text/plain"},
        b"hello",
        document_id=doc_id,
        dataset_id="deep",
        extra={"nested": "PLACEHOLDER"},
    )
    return head.replace(b'"PLACEHOLDER"', _nested_text(depth).encode())


DEPTHS = (700, 900, 960, 985, 995, 20_000)


async def test_deeply_nested_documents_never_stop_an_export(
    server: LocalS3Server, tmp_path: Path
) -> None:
    b = server.create_bucket()
    try:
        objects = {}
        for depth in DEPTHS:
            doc_id = f"deep-{depth:05d}"
            objects[f"documents/deep/{doc_id}.json"] = _deep_document(doc_id, depth)
        b.put_objects(objects)
        async with AsyncKL3MClient(**b.client_kwargs()) as client:
            for fmt in ("jsonl", "parquet"):
                dest = tmp_path / fmt
                report = await client.export("deep", dest, stage="documents", format=fmt)
                assert report.exported + report.errors == len(DEPTHS)
                assert report.exported >= 2
                errors = [json.loads(x) for x in (dest / "errors.jsonl").read_text().splitlines()]
                assert all(e["error"] == "CorruptObjectError" for e in errors)
                failed = {e["key"] for e in errors}
                # past the recursion limit the decoder refuses: a per-object error
                assert "documents/deep/deep-20000.json" in failed
                # what the decoder accepted is written, however deep (the decoder's limit
                # depends on the stack it runs on: near 1000 levels a document may be either)
                assert "documents/deep/deep-00900.json" not in failed
                exported = _read_deep(dest, fmt)
                assert len(exported) == report.exported
                limit = sys.getrecursionlimit()
                sys.setrecursionlimit(10_000)
                try:
                    for doc_id, nested in exported.items():
                        assert nested == _nested(int(doc_id.split("-")[1]))
                finally:
                    sys.setrecursionlimit(limit)
    finally:
        b.close()


def _read_deep(dest: Path, fmt: str) -> dict[str, Any]:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # the test's own reader must decode what was written
    try:
        out = {}
        for part in sorted((dest / "data").iterdir()):
            if fmt == "parquet":
                import pyarrow.parquet as pq

                for row in pq.read_table(part).to_pylist():
                    out[row["id"]] = json.loads(row["metadata"])["extra"]["nested"]
            else:
                for line in part.read_text().splitlines():
                    record = json.loads(line)
                    out[record["id"]] = record["metadata"]["extra"]["nested"]
        return out
    finally:
        sys.setrecursionlimit(limit)


# ------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A local 2-CPU Ray cluster; its workers get the test credentials from their env."""
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        },
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_outages_on_ray(
    server: LocalS3Server,
    bucket: Any,
    ray_cluster: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kl3m_data_client.ray import export_distributed

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    def run(dest: Path, **extra: Any) -> ExportReport:
        report: ExportReport = export_distributed(
            DATASET, dest, shards=2, **client_kwargs(bucket), **OPTIONS, **extra
        )
        return report

    clean = tmp_path / "clean"
    assert run(clean).exported == len(bucket.corpus.in_stage("representations", DATASET))

    before = server.http_status()  # a short outage: ridden through by every shard
    server.schedule_outage(OUTAGE_AFTER, reject=12)
    report = run(tmp_path / "short", outage_timeout=120)
    outage_hit(server, before, rejected=12)
    assert_like_clean(tmp_path / "short", clean, report)

    before = server.http_status()  # a long one: a shard stops, typed; the rerun completes
    server.schedule_outage(OUTAGE_AFTER)
    try:
        with pytest.raises(ExportStoppedError) as info:
            run(tmp_path / "long", outage_timeout=1.0)
    finally:
        server.restart_serving()
    outage_hit(server, before, rejected=0)
    assert isinstance(info.value.last_error, KL3MError) and not info.value.per_object
    assert not json.loads((tmp_path / "long" / "manifest.json").read_text())["complete"]
    report = run(tmp_path / "long", outage_timeout=1.0)
    assert_like_clean(tmp_path / "long", clean, report)


# ------------------------------------------------------------------------------ the clock
async def test_one_outage_clock_for_every_request() -> None:
    import asyncio

    from kl3m_data_client.export._outage import Outage

    outage = Outage(timeout=0.2)
    attempts: list[int] = []

    async def down(i: int) -> None:
        attempts.append(i)
        raise ConnectionFailedError(f"request {i}: connection refused", status=None)

    results = await asyncio.gather(
        *(outage.call(lambda i=i: down(i)) for i in range(64)), return_exceptions=True
    )
    assert all(isinstance(r, ExportStoppedError) for r in results)
    # one clock: all 64 stopped by the same outage, each retried while it lasted
    assert len({str(r) for r in results}) == 1
    assert set(attempts) == set(range(64))
    assert all(isinstance(r, ExportStoppedError) and r.__cause__ is r.last_error for r in results)


async def test_what_is_waited_for() -> None:
    from kl3m_data_client import (
        AccessDeniedError,
        BucketNotFoundError,
        ClientClosedError,
        ServiceError,
    )
    from kl3m_data_client.export._outage import Outage

    outage = Outage()
    assert outage.waitable(ConnectionFailedError("x"))
    assert outage.waitable(ServiceError("SlowDown", code="SlowDown", status=503))
    assert not outage.waitable(CorruptObjectError("k", "bad"))
    assert not outage.waitable(NotFoundError("gone", key="k"))
    assert not outage.waitable(ClientClosedError("closed"))
    # before anything answered: a configuration error, raised at once
    assert not outage.waitable(AccessDeniedError("denied"))
    assert not outage.waitable(BucketNotFoundError("no bucket"))
    outage.ok()  # then the same failures are an outage (expired credentials...)
    assert outage.waitable(AccessDeniedError("denied"))
    assert outage.waitable(BucketNotFoundError("no bucket"))


def test_export_stopped_error_pickles_with_its_cause() -> None:
    import pickle

    cause = ConnectionFailedError("down", key="documents/x/1.json", status=503, request_id="R1")
    exc = ExportStoppedError("stopped", last_error=cause)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is ExportStoppedError and str(back) == "stopped"
    assert isinstance(back.last_error, ConnectionFailedError)
    assert back.__cause__ is back.last_error
    assert (back.key, back.status, back.request_id) == ("documents/x/1.json", 503, "R1")
    assert not back.per_object
