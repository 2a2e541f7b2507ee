"""kl3m-client against a hostile endpoint (the fault proxy in front of moto), as a user runs it.

Each run ends in bounded time with a non-zero exit and one clear error line, or exports
exactly the dataset; the session token of the environment is never printed nor written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client.testing import LocalBucket, LocalS3Server
from kl3m_data_client.testing._faults import Fault, FaultPlan, RequestInfo, run_fault_proxy
from test_cli import cli_env, read_jsonl_ids, run

TOKEN = "kl3mCLItoken-sent-by-the-environment-0123456789abcdef"
FOREIGN = "private/secret.json"


@pytest.fixture(scope="module")
def bucket(kl3m_server: LocalS3Server) -> Iterator[LocalBucket]:
    b = kl3m_server.create_bucket(n_documents=30, seed=13)
    b.put_objects({FOREIGN: b'{"id": "outside"}'})
    try:
        yield b
    finally:
        b.close()


def _dataset(bucket: LocalBucket) -> tuple[str, list[str]]:
    dataset = sorted({d.dataset_id for d in bucket.corpus.documents})[0]
    prefix = f"documents/{dataset}/"
    ids = sorted(
        k[len(prefix) :].removesuffix(".json")
        for k in bucket.corpus.objects
        if k.startswith(prefix)
    )
    return dataset, ids


def _plan(kind: Fault, **over: Any) -> FaultPlan:
    return FaultPlan(**{"rate": 1.0, "kinds": {kind}, "max_faults_per_request": None, **over})


def _cli(bucket: LocalBucket, endpoint: str, *args: str) -> Any:
    env = cli_env(AWS_SESSION_TOKEN=TOKEN)
    proc = run(*args, endpoint=endpoint, bucket=bucket.bucket, env=env, timeout=90)
    assert TOKEN not in proc.stdout + proc.stderr
    return proc


def _error_line(proc: Any) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kl3m-client: error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return str(lines[0])


@pytest.mark.timeout(120)
def test_cli_refuses_a_redirect_to_another_host(bucket: LocalBucket, tmp_path: Path) -> None:
    dataset, _ = _dataset(bucket)
    with run_fault_proxy(bucket.endpoint_url, _plan(Fault.REDIRECT_OTHER_HOST)) as proxy:
        count = _cli(bucket, proxy.endpoint_url, "documents", dataset, "--count")
        export = _cli(bucket, proxy.endpoint_url, "export", dataset, str(tmp_path / "out"))
        other = f"{proxy.other.name}:{proxy.other.port}"
        assert proxy.other.requests == []
    for proc in (count, export):
        assert proc.returncode != 0
        assert f"another host {other}" in _error_line(proc)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (Fault.LIST_TOKEN_LOOP, "repeats a continuation token"),
        (Fault.LIST_NO_TOKEN, "truncated but has no continuation token"),
        (Fault.LIST_OUT_OF_ORDER, "not ascending"),
    ],
)
def test_cli_stops_on_an_untrustworthy_listing(
    bucket: LocalBucket, tmp_path: Path, kind: Fault, reason: str
) -> None:
    dataset, _ = _dataset(bucket)
    with run_fault_proxy(bucket.endpoint_url, _plan(kind)) as proxy:
        count = _cli(bucket, proxy.endpoint_url, "documents", dataset, "--count")
        export = _cli(bucket, proxy.endpoint_url, "export", dataset, str(tmp_path / "out"))
        assert proxy.fired[kind] >= 1
    for proc in (count, export):
        assert proc.returncode != 0
        line = _error_line(proc)
        assert reason in line and f"documents/{dataset}/" in line


@pytest.mark.timeout(120)
def test_cli_export_skips_keys_outside_the_dataset(bucket: LocalBucket, tmp_path: Path) -> None:
    dataset, ids = _dataset(bucket)
    with run_fault_proxy(bucket.endpoint_url, _plan(Fault.LIST_FOREIGN_KEY)) as proxy:
        proc = _cli(
            bucket, proxy.endpoint_url, "export", dataset, str(tmp_path / "out"), "--json", "-q"
        )
        assert proxy.fired[Fault.LIST_FOREIGN_KEY] >= 1
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(read_jsonl_ids(report)) == ids
    assert "outside" not in "".join(p.read_text() for p in (tmp_path / "out").rglob("*.jsonl"))


@pytest.mark.timeout(120)
def test_cli_never_prints_an_echoed_session_token(bucket: LocalBucket, tmp_path: Path) -> None:
    dataset, _ = _dataset(bucket)

    def lists(info: RequestInfo) -> bool:
        return info.operation == "ListObjectsV2"

    def gets(info: RequestInfo) -> bool:
        return info.operation == "GetObject"

    with run_fault_proxy(bucket.endpoint_url, _plan(Fault.ECHO_HEADERS, select=lists)) as proxy:
        count = _cli(bucket, proxy.endpoint_url, "documents", dataset, "--count")
        assert proxy.fired[Fault.ECHO_HEADERS] >= 1
    assert count.returncode != 0
    assert "X-Amz-Security-Token is" in _error_line(count)  # echoed, and redacted

    # a per-object error code: the echo lands in errors.jsonl
    plan = _plan(Fault.ECHO_HEADERS, select=gets, echo_status=403, echo_code="InvalidObjectState")
    dest = tmp_path / "out"
    with run_fault_proxy(bucket.endpoint_url, plan) as proxy:
        export = _cli(bucket, proxy.endpoint_url, "export", dataset, str(dest))
        assert proxy.fired[Fault.ECHO_HEADERS] >= 1
    assert export.returncode != 0
    written = "".join(p.read_text(errors="replace") for p in dest.rglob("*") if p.is_file())
    assert "X-Amz-Security-Token is" in written
    assert TOKEN not in written
