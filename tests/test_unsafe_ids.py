"""Unsafe listed ids are reported and skipped; the CLI never prints control characters raw
(issue 13). Keys are put into a bucket of the local moto server over HTTP.

Not tested with a real key: ids holding a line feed. moto's server answers 404 to a PUT
whose key contains ``%0A``, so no such object can be created; carriage return, tab and the
other C0/C1 controls are covered, and the validator treats ``\\n`` like them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kl3m_data_client import AsyncKL3MClient, KL3MClient
from kl3m_data_client.testing import LocalBucket, LocalS3Server, encode_document_object

GOOD_IDS = ["a", "b/c", "rlo\u202eevil"]  # a bidi override is a valid id; the CLI escapes it
UNSAFE_IDS = [
    "../../escape",
    "./dot",
    "/abs",
    "a//b",
    "nul\x00id",
    "esc\x1b[31mred",
    "cr\rid",
    "tab\tid",
    "del\x7fid",
    "nel\x85id",
    "csi\x9b2Jid",
]
EVIL_DATASET = "evil\x1b[31m"
TITLE = "Title\x1b[2J with\nnewline and \u202ervo"
CONTENT = "line one\x1b]0;pwned\x07\nline two\twith tab\r\x9b2J"
RAW_BAD = ("\x1b", "\x00", "\x07", "\x85", "\x9b", "\r", "\u202e")


def _object(doc_id: str, dataset: str = "ds", title: str = "t", content: str = "text") -> bytes:
    return encode_document_object(
        {"identifier": f"id-{len(doc_id)}", "title": title, "format": "text/plain"},
        content.encode(),
        document_id=doc_id,
        dataset_id=dataset,
    )


@pytest.fixture(scope="module")
def unsafe_bucket(kl3m_server: LocalS3Server) -> Iterator[LocalBucket]:
    objects = {f"documents/ds/{i}.json": _object(i) for i in GOOD_IDS + UNSAFE_IDS}
    objects["documents/ds/a.json"] = _object("a", title=TITLE, content=CONTENT)
    objects[f"documents/{EVIL_DATASET}/x.json"] = _object("x", EVIL_DATASET)
    bucket = kl3m_server.create_bucket(objects=objects)
    try:
        yield bucket
    finally:
        bucket.close()


def _expected_good() -> list[str]:
    return sorted(GOOD_IDS, key=lambda i: f"documents/ds/{i}.json")


def _warned_keys(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.args[0]  # type: ignore[index]
        for r in caplog.records
        if r.name == "kl3m_data_client" and r.levelno == logging.WARNING
    ]


# -- library -------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_unsafe_listed_ids_are_warned_and_skipped(
    unsafe_bucket: LocalBucket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kl3m_data_client")
    async with AsyncKL3MClient(**unsafe_bucket.client_kwargs()) as client:
        keys = await client.iter_prefix("documents/ds/")
        assert len(keys) == len(GOOD_IDS) + len(UNSAFE_IDS)  # all stored, all listed
        ids = [i async for i in client.iter_documents("ds")]
        assert ids == _expected_good()
        assert sorted(_warned_keys(caplog)) == sorted(f"documents/ds/{i}.json" for i in UNSAFE_IDS)
        assert all("unsafe document id" in r.getMessage() for r in caplog.records)
        # the message shows the key escaped (repr), never raw control characters
        assert not any(c in r.getMessage() for r in caplog.records for c in RAW_BAD)

        caplog.clear()
        docs = [d async for d in client.stream_documents("ds")]  # never stops at a bad id
        assert [d.document_id for d in docs] == _expected_good()
        assert len(_warned_keys(caplog)) == len(UNSAFE_IDS)
        # a limit counts the ids yielded, not the ones skipped
        assert await client.iter_documents("ds", limit=3) == _expected_good()[:3]


def test_unsafe_listed_ids_blocking_client(
    unsafe_bucket: LocalBucket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kl3m_data_client")
    with KL3MClient(**unsafe_bucket.client_kwargs()) as client:
        assert list(client.iter_documents("ds")) == _expected_good()
        assert [d.document_id for d in client.stream_documents("ds")] == _expected_good()
    assert len(_warned_keys(caplog)) == 2 * len(UNSAFE_IDS)


# -- CLI -----------------------------------------------------------------------------------------
def _run(bucket: LocalBucket, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "KL3M_")) and k not in ("NO_COLOR", "COLUMNS")
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONWARNINGS="error",
    )
    cmd = [sys.executable, "-m", "kl3m_data_client.cli", "--endpoint-url", bucket.endpoint_url]
    return subprocess.run(
        [*cmd, "--bucket", bucket.bucket, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _no_raw_controls(*texts: str) -> None:
    for text in texts:
        bad = [c for c in RAW_BAD if c in text]
        assert not bad, (bad, text)


def test_cli_documents_escapes_ids_and_json_stays_exact(
    unsafe_bucket: LocalBucket, tmp_path: Path
) -> None:
    human = _run(unsafe_bucket, "documents", "ds")
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines() == ["a", "b/c", "rlo\\u202eevil"]
    _no_raw_controls(human.stdout, human.stderr)
    for doc_id in UNSAFE_IDS:  # each skipped key is named on stderr, escaped
        assert repr(f"documents/ds/{doc_id}.json") in human.stderr

    as_json = _run(unsafe_bucket, "--json", "documents", "ds")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["documents"] == _expected_good()  # exact values
    _no_raw_controls(as_json.stdout)
    assert "\\u202e" in as_json.stdout

    out = tmp_path / "ids.txt"
    to_file = _run(unsafe_bucket, "documents", "ds", "--output", str(out))
    assert to_file.returncode == 0, to_file.stderr
    assert out.read_text(encoding="utf-8").splitlines() == _expected_good()  # a file is data


def test_cli_list_escapes_dataset_names(unsafe_bucket: LocalBucket) -> None:
    human = _run(unsafe_bucket, "list")
    assert human.returncode == 0, human.stderr
    assert "evil\\x1b[31m" in human.stdout
    _no_raw_controls(human.stdout, human.stderr)
    as_json = _run(unsafe_bucket, "--json", "list")
    assert as_json.returncode == 0, as_json.stderr
    assert set(json.loads(as_json.stdout)) == {"ds", EVIL_DATASET}
    _no_raw_controls(as_json.stdout)


def test_cli_inspect_escapes_metadata_and_preview(unsafe_bucket: LocalBucket) -> None:
    human = _run(unsafe_bucket, "inspect", "ds", "a")
    assert human.returncode == 0, human.stderr
    _no_raw_controls(human.stdout, human.stderr)
    assert "Title\\x1b[2J with\\nnewline and \\u202ervo" in human.stdout
    # the preview keeps its lines (and tab), everything else escaped
    assert "line one\\x1b]0;pwned\\x07" in human.stdout
    assert re.search(r"line two\s+with tab\\r\\x9b2J", human.stdout)  # rich expands tabs

    as_json = _run(unsafe_bucket, "--json", "inspect", "ds", "a")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["metadata"]["title"] == TITLE and data["content_preview"] == CONTENT
    _no_raw_controls(as_json.stdout)
    # a dataset id with a control character is refused, and the error line is escaped
    status = _run(unsafe_bucket, "status", EVIL_DATASET)
    assert status.returncode == 2 and "evil\\x1b[31m" in status.stderr
    _no_raw_controls(status.stdout, status.stderr)
